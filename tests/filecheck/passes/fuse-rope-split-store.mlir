// RUN: fusegraph opt %s -p fuse-rope-split-store --split-input-file | filecheck %s
// RUN: fusegraph opt %s -p canonicalize,fuse-rope-split-store --split-input-file | filecheck %s --check-prefix=CANON
// Guards, one refusal case each: refuse_split_user: split result 0 has another user; refuse_reshape_user: the k reshape has another user; refuse_rope_user: the k rope has another user; refuse_interleaved: the ropes disagree on interleaved; refuse_freqs: the ropes use different freqs_cis; refuse_start_pos: the k rope's start_pos is not the cache lengths; refuse_layers: the stores target different layers; refuse_same_kov: both stores write values; refuse_metadata: the stores use different lookup tables; refuse_unchained: the value store does not take the key store's buffer; refuse_split_sizes: the split has a 4th piece; refuse_head_dim: q is reshaped to other heads than k and v

// CHECK-LABEL: func.func @fuse_one
// CHECK: %{{.*}}, %{{.*}} = fg.rope_split_store %0, %1, %2, %3, %4, %5 {layer_idx = 0 : i64, n_heads = 4 : i64, n_kv_heads = 2 : i64, head_dim = 16 : i64, interleaved = false}
// CHECK-NOT: fg.rope %
// CHECK-NOT: fg.kv_cache.store
// CHECK-NOT: fg.split
// CHECK: func.return
builtin.module {
  func.func @fuse_one(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.rope %9, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %13 = fg.rope %10, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %14 = fg.kv_cache.store %3, %13, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %15 = fg.kv_cache.store %14, %11, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %16 = fg.reshape %12 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %16, %15 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fuse_interleaved_mha
// CHECK: fg.rope_split_store {{.*}}n_heads = 4 : i64, n_kv_heads = 4 : i64, head_dim = 16 : i64, interleaved = true
// CHECK-NOT: fg.rope %
// CHECK-NOT: fg.kv_cache.store
// CHECK-NOT: fg.split
// CHECK: func.return
builtin.module {
  func.func @fuse_interleaved_mha(%0: !fg.tensor<[total_seq_len, 192], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 4, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 4, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 192], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %12 = fg.rope %9, %1, %4, %2 {interleaved = true} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %13 = fg.rope %10, %1, %4, %2 {interleaved = true} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %14 = fg.kv_cache.store %3, %13, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 4, 16], f32, cpu>, !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 4, 16], f32, cpu>
    %15 = fg.kv_cache.store %14, %11, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 4, 16], f32, cpu>, !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 4, 16], f32, cpu>
    %16 = fg.reshape %12 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %16, %15 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 4, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fuse_four_layers
// CHECK-COUNT-4: fg.rope_split_store
// CHECK-NOT: fg.rope %
// CHECK-NOT: fg.kv_cache.store
// CHECK-NOT: fg.split
// CHECK: func.return
builtin.module {
  func.func @fuse_four_layers(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.rope %9, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %13 = fg.rope %10, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %14 = fg.kv_cache.store %3, %13, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>
    %15 = fg.kv_cache.store %14, %11, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>
    %16 = fg.reshape %12 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    %17, %18, %19 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %20 = fg.reshape %17 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %21 = fg.reshape %18 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %22 = fg.reshape %19 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %23 = fg.rope %20, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %24 = fg.rope %21, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %25 = fg.kv_cache.store %15, %24, %1, %4, %5 {layer_idx = 1 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>
    %26 = fg.kv_cache.store %25, %22, %1, %4, %5 {layer_idx = 1 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>
    %27 = fg.reshape %23 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    %28, %29, %30 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %31 = fg.reshape %28 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %32 = fg.reshape %29 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %33 = fg.reshape %30 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %34 = fg.rope %31, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %35 = fg.rope %32, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %36 = fg.kv_cache.store %26, %35, %1, %4, %5 {layer_idx = 2 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>
    %37 = fg.kv_cache.store %36, %33, %1, %4, %5 {layer_idx = 2 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>
    %38 = fg.reshape %34 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    %39, %40, %41 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %42 = fg.reshape %39 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %43 = fg.reshape %40 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %44 = fg.reshape %41 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %45 = fg.rope %42, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %46 = fg.rope %43, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %47 = fg.kv_cache.store %37, %46, %1, %4, %5 {layer_idx = 3 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>
    %48 = fg.kv_cache.store %47, %44, %1, %4, %5 {layer_idx = 3 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>
    %49 = fg.reshape %45 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %16, %27, %38, %49, %48 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 4, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_split_user
// CHECK-NOT: fg.rope_split_store
// CHECK: fg.kv_cache.store
// CHECK: func.return
builtin.module {
  func.func @refuse_split_user(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.rope %9, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %13 = fg.rope %10, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %14 = fg.kv_cache.store %3, %13, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %15 = fg.kv_cache.store %14, %11, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %16 = fg.reshape %12 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %16, %6, %15 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_reshape_user
// CHECK-NOT: fg.rope_split_store
// CHECK: fg.kv_cache.store
// CHECK: func.return
builtin.module {
  func.func @refuse_reshape_user(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.rope %9, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %13 = fg.rope %10, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %14 = fg.kv_cache.store %3, %13, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %15 = fg.kv_cache.store %14, %11, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %16 = fg.reshape %12 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %16, %10, %15 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_rope_user
// CHECK-NOT: fg.rope_split_store
// CHECK: fg.kv_cache.store
// CHECK: func.return
builtin.module {
  func.func @refuse_rope_user(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.rope %9, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %13 = fg.rope %10, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %14 = fg.kv_cache.store %3, %13, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %15 = fg.kv_cache.store %14, %11, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %16 = fg.reshape %12 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %16, %13, %15 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_interleaved
// CHECK-NOT: fg.rope_split_store
// CHECK: fg.kv_cache.store
// CHECK: func.return
builtin.module {
  func.func @refuse_interleaved(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.rope %9, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %13 = fg.rope %10, %1, %4, %2 {interleaved = true} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %14 = fg.kv_cache.store %3, %13, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %15 = fg.kv_cache.store %14, %11, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %16 = fg.reshape %12 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %16, %15 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_freqs
// CHECK-NOT: fg.rope_split_store
// CHECK: fg.kv_cache.store
// CHECK: func.return
builtin.module {
  func.func @refuse_freqs(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.constant {value = 1.000000e+00 : f64} : !fg.tensor<[], f32, cpu>
    %13 = fg.mul %2, %12 : !fg.tensor<[256, 16], f32, cpu>, !fg.tensor<[], f32, cpu> -> !fg.tensor<[256, 16], f32, cpu>
    %14 = fg.rope %9, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %15 = fg.rope %10, %1, %4, %13 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %16 = fg.kv_cache.store %3, %15, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %17 = fg.kv_cache.store %16, %11, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %18 = fg.reshape %14 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %18, %17 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_start_pos
// CHECK-NOT: fg.rope_split_store
// CHECK: fg.kv_cache.store
// CHECK: func.return
builtin.module {
  func.func @refuse_start_pos(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.slice %5 {starts = array<i64: 0, 0>, stops = array<i64: 9223372036854775807, 1>, steps = array<i64: 1, 1>} : !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.tensor<[batch, 1], u32, cpu>
    %13 = fg.reshape %12 : !fg.tensor<[batch, 1], u32, cpu> -> !fg.tensor<[batch], u32, cpu>
    %14 = fg.rope %9, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %15 = fg.rope %10, %1, %13, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %16 = fg.kv_cache.store %3, %15, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %17 = fg.kv_cache.store %16, %11, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %18 = fg.reshape %14 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %18, %17 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_layers
// CHECK-NOT: fg.rope_split_store
// CHECK: fg.kv_cache.store
// CHECK: func.return
builtin.module {
  func.func @refuse_layers(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 2, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 2, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.rope %9, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %13 = fg.rope %10, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %14 = fg.kv_cache.store %3, %13, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 2, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 2, 16, 2, 16], f32, cpu>
    %15 = fg.kv_cache.store %14, %11, %1, %4, %5 {layer_idx = 1 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 2, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 2, 16, 2, 16], f32, cpu>
    %16 = fg.reshape %12 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %16, %15 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 2, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_same_kov
// CHECK-NOT: fg.rope_split_store
// CHECK: fg.kv_cache.store
// CHECK: func.return
builtin.module {
  func.func @refuse_same_kov(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.rope %9, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %13 = fg.rope %10, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %14 = fg.kv_cache.store %3, %13, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %15 = fg.kv_cache.store %14, %11, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %16 = fg.reshape %12 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %16, %15 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_metadata
// CHECK-NOT: fg.rope_split_store
// CHECK: fg.kv_cache.store
// CHECK: func.return
builtin.module {
  func.func @refuse_metadata(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.rope %9, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %13 = fg.rope %10, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %14 = fg.kv_cache.store %3, %13, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %15 = fg.slice %5 {starts = array<i64: 0, 0>, stops = array<i64: 9223372036854775807, 9223372036854775807>, steps = array<i64: 1, 1>} : !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.tensor<[batch, max_pages], u32, cpu>
    %16 = fg.kv_cache.store %14, %11, %1, %4, %15 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %17 = fg.reshape %12 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %17, %16 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_unchained
// CHECK-NOT: fg.rope_split_store
// CHECK: fg.kv_cache.store
// CHECK: func.return
builtin.module {
  func.func @refuse_unchained(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.rope %9, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %13 = fg.rope %10, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %14 = fg.kv_cache.store %3, %13, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %15 = fg.kv_cache.store %3, %11, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %16 = fg.reshape %12 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %16, %14 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_split_sizes
// CHECK-NOT: fg.rope_split_store
// CHECK: fg.kv_cache.store
// CHECK: func.return
builtin.module {
  func.func @refuse_split_sizes(%0: !fg.tensor<[total_seq_len, 144], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6, %7, %8, %9 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 144], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 16], f32, cpu>
    %10 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %11 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %13 = fg.rope %10, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %14 = fg.rope %11, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %15 = fg.kv_cache.store %3, %14, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %16 = fg.kv_cache.store %15, %12, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %17 = fg.reshape %13 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %17, %16 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @refuse_head_dim
// CHECK-NOT: fg.rope_split_store
// CHECK: fg.kv_cache.store
// CHECK: func.return
builtin.module {
  func.func @refuse_head_dim(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 8, 8], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.slice %2 {starts = array<i64: 0, 0>, stops = array<i64: 256, 8>, steps = array<i64: 1, 1>} : !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[256, 8], f32, cpu>
    %13 = fg.rope %9, %1, %4, %12 {interleaved = false} : !fg.tensor<[total_seq_len, 8, 8], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 8], f32, cpu> -> !fg.tensor<[total_seq_len, 8, 8], f32, cpu>
    %14 = fg.rope %10, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %15 = fg.kv_cache.store %3, %14, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %16 = fg.kv_cache.store %15, %11, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %17 = fg.reshape %13 : !fg.tensor<[total_seq_len, 8, 8], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %17, %16 : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @fuse_reshape_free
// CHECK: %[[Q:[0-9]+]], %[[KV:[0-9]+]] = fg.rope_split_store %0, %1, %2, %3, %4, %5
// CHECK-NEXT: %[[Q3:[0-9]+]] = fg.reshape %[[Q]] : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
// CHECK-NEXT: fg.attention.paged %[[Q3]], %1, %[[KV]], %4, %5
// CHECK-NOT: fg.rope %
// CHECK-NOT: fg.kv_cache.store
// CHECK-NOT: fg.split
// CHECK: func.return
builtin.module {
  func.func @fuse_reshape_free(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.rope %9, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %13 = fg.rope %10, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %14 = fg.kv_cache.store %3, %13, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %15 = fg.kv_cache.store %14, %11, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %16 = fg.attention.paged %12, %1, %15, %4, %5 {layer_idx = 0 : i64, scale = 2.500000e-01 : f64, mask = "causal"} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    func.return %16, %15 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @canonicalize_then_fuse
// CHECK: %[[Q:[0-9]+]], %[[KV:[0-9]+]] = fg.rope_split_store %0, %1, %2, %3, %4, %5
// CHECK-NEXT: %[[Q3:[0-9]+]] = fg.reshape %[[Q]] : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
// CHECK-NEXT: fg.attention.paged %[[Q3]], %1, %[[KV]], %4, %5
// CHECK-NOT: fg.rope %
// CHECK-NOT: fg.kv_cache.store
// CHECK-NOT: fg.split
// CHECK: func.return
// CANON-LABEL: func.func @canonicalize_then_fuse
// CANON: %[[Q:[0-9]+]], %[[KV:[0-9]+]] = fg.rope_split_store %0, %1, %2, %3, %4, %5
// CANON-NEXT: %[[Q3:[0-9]+]] = fg.reshape %[[Q]] : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
// CANON-NEXT: fg.attention.paged %[[Q3]], %1, %[[KV]], %4, %5
// CANON-NOT: fg.rope %
// CANON-NOT: fg.kv_cache.store
// CANON: func.return
builtin.module {
  func.func @canonicalize_then_fuse(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.rope %9, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %13 = fg.rope %10, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %14 = fg.kv_cache.store %3, %13, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %15 = fg.kv_cache.store %14, %11, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
    %16 = fg.reshape %12 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    %17 = fg.reshape %16 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %18 = fg.attention.paged %17, %1, %15, %4, %5 {layer_idx = 0 : i64, scale = 2.500000e-01 : f64, mask = "causal"} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    func.return %18, %15 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 1, 16, 2, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @canonicalize_then_fuse_three_layers
// CHECK-COUNT-3: fg.rope_split_store
// CHECK-NOT: fg.rope %
// CHECK-NOT: fg.kv_cache.store
// CHECK-NOT: fg.split
// CHECK: func.return
// CANON-LABEL: func.func @canonicalize_then_fuse_three_layers
// CANON: fg.rope_split_store {{.*}} {layer_idx = 0 : i64
// CANON: fg.rope_split_store {{.*}} {layer_idx = 1 : i64
// CANON: fg.rope_split_store {{.*}} {layer_idx = 2 : i64
// CANON-NOT: fg.rope %
// CANON-NOT: fg.kv_cache.store
// CANON: func.return
builtin.module {
  func.func @canonicalize_then_fuse_three_layers(%0: !fg.tensor<[total_seq_len, 128], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.tensor<[256, 16], f32, cpu>, %3: !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>, %4: !fg.tensor<[batch], u32, cpu>, %5: !fg.tensor<[batch, max_pages], u32, cpu>) -> (!fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>) {
    %6, %7, %8 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %9 = fg.reshape %6 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %10 = fg.reshape %7 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %11 = fg.reshape %8 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %12 = fg.rope %9, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %13 = fg.rope %10, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %14 = fg.kv_cache.store %3, %13, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>
    %15 = fg.kv_cache.store %14, %11, %1, %4, %5 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>
    %16 = fg.reshape %12 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    %17 = fg.reshape %16 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %18 = fg.attention.paged %17, %1, %15, %4, %5 {layer_idx = 0 : i64, scale = 2.500000e-01 : f64, mask = "causal"} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %19, %20, %21 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %22 = fg.reshape %19 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %23 = fg.reshape %20 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %24 = fg.reshape %21 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %25 = fg.rope %22, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %26 = fg.rope %23, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %27 = fg.kv_cache.store %15, %26, %1, %4, %5 {layer_idx = 1 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>
    %28 = fg.kv_cache.store %27, %24, %1, %4, %5 {layer_idx = 1 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>
    %29 = fg.reshape %25 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    %30 = fg.reshape %29 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %31 = fg.attention.paged %30, %1, %28, %4, %5 {layer_idx = 1 : i64, scale = 2.500000e-01 : f64, mask = "causal"} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %32, %33, %34 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %35 = fg.reshape %32 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %36 = fg.reshape %33 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %37 = fg.reshape %34 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %38 = fg.rope %35, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %39 = fg.rope %36, %1, %4, %2 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[256, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %40 = fg.kv_cache.store %28, %39, %1, %4, %5 {layer_idx = 2 : i64, key_or_value = 0 : i64} : !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>
    %41 = fg.kv_cache.store %40, %37, %1, %4, %5 {layer_idx = 2 : i64, key_or_value = 1 : i64} : !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>
    %42 = fg.reshape %38 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    %43 = fg.reshape %42 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %44 = fg.attention.paged %43, %1, %41, %4, %5 {layer_idx = 2 : i64, scale = 2.500000e-01 : f64, mask = "causal"} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    func.return %18, %31, %44, %41 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.buffer<[num_blocks, 2, 3, 16, 2, 16], f32, cpu>
  }
}
