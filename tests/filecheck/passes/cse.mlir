// RUN: fusegraph opt %s -p cse --split-input-file | filecheck %s

// CHECK-LABEL: func.func @merge_reshapes
// CHECK-NEXT: %1 = fg.reshape %0
// CHECK-NEXT: fg.add %1, %1
builtin.module {
  func.func @merge_reshapes(%0: !fg.tensor<[T, 64], f32, cpu>) -> !fg.tensor<[T, 4, 16], f32, cpu> {
    %1 = fg.reshape %0 : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 4, 16], f32, cpu>
    %2 = fg.reshape %0 : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 4, 16], f32, cpu>
    %3 = fg.add %1, %2 : !fg.tensor<[T, 4, 16], f32, cpu>, !fg.tensor<[T, 4, 16], f32, cpu> -> !fg.tensor<[T, 4, 16], f32, cpu>
    func.return %3 : !fg.tensor<[T, 4, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @keep_different_reshapes
// CHECK-NEXT: fg.reshape
// CHECK-NEXT: fg.reshape
builtin.module {
  func.func @keep_different_reshapes(%0: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[T, 4, 16], f32, cpu>, !fg.tensor<[T, 2, 32], f32, cpu>) {
    %1 = fg.reshape %0 : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 4, 16], f32, cpu>
    %2 = fg.reshape %0 : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 2, 32], f32, cpu>
    func.return %1, %2 : !fg.tensor<[T, 4, 16], f32, cpu>, !fg.tensor<[T, 2, 32], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @keep_twin_stores
// CHECK-COUNT-2: fg.kv_cache.store
// CHECK-NEXT: func.return
builtin.module {
  func.func @keep_twin_stores(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6 = fg.slice %0 {starts = array<i64: 0, 0>, stops = array<i64: 9223372036854775807, 32>, steps = array<i64: 1, 1>} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 32], f32, cpu>
    %7 = fg.reshape %6 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %8 = fg.kv_cache.store %3, %7, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %9 = fg.kv_cache.store %3, %7, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    func.return %8, %9 : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @keep_unused_twin_stores
// CHECK-COUNT-2: fg.kv_cache.store
builtin.module {
  func.func @keep_unused_twin_stores(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu> {
    %6 = fg.slice %0 {starts = array<i64: 0, 0>, stops = array<i64: 9223372036854775807, 32>, steps = array<i64: 1, 1>} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 32], f32, cpu>
    %7 = fg.reshape %6 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %8 = fg.kv_cache.store %3, %7, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %9 = fg.kv_cache.store %3, %7, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %10 = fg.relu %7 : !fg.tensor<[total_seq_len, 2, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    func.return %10 : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
  }
}
