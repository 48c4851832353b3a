// RUN: fusegraph opt %s -p unfuse-rope-split-store --split-input-file | filecheck %s
// The pass has no guards: every fg.rope_split_store unfuses.

// CHECK-LABEL: func.func @unfuse_one
// CHECK: fg.split %0 {axis = 1 : i64}
// CHECK: fg.reshape
// CHECK: fg.reshape
// CHECK: fg.reshape
// CHECK: fg.rope %{{.*}} {interleaved = false}
// CHECK: fg.rope %{{.*}} {interleaved = false}
// CHECK: fg.kv_cache.store %3, {{.*}} {layer_idx = 0 : i64, key_or_value = 0 : i64}
// CHECK: fg.kv_cache.store {{.*}} {layer_idx = 0 : i64, key_or_value = 1 : i64}
// CHECK: fg.reshape {{.*}} -> !fg.tensor<[total_seq_len, 64], f32, cpu>
// CHECK-NOT: fg.rope_split_store
builtin.module {
  func.func @unfuse_one(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6, %7 = fg.rope_split_store %0, %1, %2, %3, %4, %5 {layer_idx = 0 : i64, n_heads = 4 : i64, n_kv_heads = 2 : i64, head_dim = 16 : i64, interleaved = false} : !fg.tensor<[total_seq_len, 128], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[256, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    func.return %6, %7 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @unfuse_four_layers
// CHECK-COUNT-8: fg.kv_cache.store
// CHECK-NOT: fg.rope_split_store
builtin.module {
  func.func @unfuse_four_layers(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>) {
    %6, %7 = fg.rope_split_store %0, %1, %2, %3, %4, %5 {layer_idx = 0 : i64, n_heads = 4 : i64, n_kv_heads = 2 : i64, head_dim = 16 : i64, interleaved = false} : !fg.tensor<[total_seq_len, 128], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[256, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>
    %8, %9 = fg.rope_split_store %0, %1, %2, %7, %4, %5 {layer_idx = 1 : i64, n_heads = 4 : i64, n_kv_heads = 2 : i64, head_dim = 16 : i64, interleaved = false} : !fg.tensor<[total_seq_len, 128], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[256, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>
    %10, %11 = fg.rope_split_store %0, %1, %2, %9, %4, %5 {layer_idx = 2 : i64, n_heads = 4 : i64, n_kv_heads = 2 : i64, head_dim = 16 : i64, interleaved = false} : !fg.tensor<[total_seq_len, 128], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[256, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>
    %12, %13 = fg.rope_split_store %0, %1, %2, %11, %4, %5 {layer_idx = 3 : i64, n_heads = 4 : i64, n_kv_heads = 2 : i64, head_dim = 16 : i64, interleaved = false} : !fg.tensor<[total_seq_len, 128], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[256, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>
    func.return %6, %8, %10, %12, %13 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>
  }
}
