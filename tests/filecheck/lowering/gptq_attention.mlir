// The lowering of a 1-layer GPTQ attention graph (the canonical unfused chain: split, rope,
// two stores, paged attention, GPTQ q/k/v and o projections), as written and after
// fuse-rope-split-store. Symbolic dims (total_seq_len, batch, max_pages) stay dynamic.

// RUN: fusegraph lower %s --mode custom | filecheck %s --check-prefix=CUSTOM
// RUN: fusegraph lower %s -p fuse-rope-split-store --mode custom | filecheck %s --check-prefix=FUSED
// RUN: fusegraph lower %s --mode decomposed | filecheck %s --check-prefix=DECOMP
// RUN: fusegraph lower %s -p fuse-rope-split-store --mode decomposed --output-type linalg-on-tensors \
// RUN:   | filecheck %s --check-prefix=LINALG

// Custom ops stay single `torch.operator`s (functional forms); the KV buffer is threaded through.
// CUSTOM-LABEL: func.func @main(%arg0: !torch.vtensor<[?,64],f32>, %arg1: !torch.vtensor<[?],ui32>, %arg2: !torch.vtensor<[24,2,1,4,2,16],f32>, %arg3: !torch.vtensor<[?],ui32>, %arg4: !torch.vtensor<[?,?],ui32>
// CUSTOM:       torch.operator "torch.fusegraph.qmatmul_gptq"(%arg0, {{.*}} -> !torch.vtensor<[?,128],f32>
// CUSTOM:       torch.aten.split_with_sizes
// CUSTOM:       torch.operator "torch.fusegraph.rope"({{.*}}) : {{.*}} -> !torch.vtensor<[?,4,16],f32>
// CUSTOM:       torch.operator "torch.fusegraph.rope"({{.*}}) : {{.*}} -> !torch.vtensor<[?,2,16],f32>
// CUSTOM:       %[[K:.*]] = torch.operator "torch.fusegraph.kv_cache_store"(%arg2,
// CUSTOM:       %[[KV:.*]] = torch.operator "torch.fusegraph.kv_cache_store"(%[[K]],
// CUSTOM:       torch.operator "torch.fusegraph.paged_attention"({{.*}}, %[[KV]],
// CUSTOM:       %[[OUT:.*]] = torch.operator "torch.fusegraph.qmatmul_gptq"
// CUSTOM:       return %[[OUT]], %[[KV]] : !torch.vtensor<[?,64],f32>, !torch.vtensor<[24,2,1,4,2,16],f32>

// FUSED-LABEL: func.func @main
// FUSED:       torch.operator "torch.fusegraph.qmatmul_gptq"
// FUSED-NOT:   torch.fusegraph.rope"
// FUSED:       %[[RSS:.*]]:2 = torch.operator "torch.fusegraph.rope_split_store"({{.*}}) : {{.*}} -> (!torch.vtensor<[?,64],f32>, !torch.vtensor<[24,2,1,4,2,16],f32>)
// FUSED-NOT:   torch.fusegraph.kv_cache_store
// FUSED:       torch.operator "torch.fusegraph.paged_attention"({{.*}}, %[[RSS]]#1,
// FUSED:       torch.operator "torch.fusegraph.qmatmul_gptq"
// FUSED:       return {{.*}}, %[[RSS]]#1

// Decomposed: pure aten, gathers as 1-D index_select, cache writes as flattened index_put.
// DECOMP-LABEL: func.func @main(%arg0: !torch.vtensor<[?,64],f32>
// DECOMP-NOT:   torch.operator
// DECOMP:       torch.aten.mm %{{.*}} : !torch.vtensor<[?,64],f32>, !torch.vtensor<[64,128],f32> -> !torch.vtensor<[?,128],f32>
// DECOMP:       torch.aten.index_select
// DECOMP:       torch.aten.index_put
// DECOMP:       torch.aten.index_put
// DECOMP:       torch.aten.mm
// DECOMP-NOT:   torch.operator
// DECOMP:       return {{.*}} : !torch.vtensor<[?,64],f32>, !torch.vtensor<[24,2,1,4,2,16],f32>

// uint32 metadata becomes signless i32 and is zero-extended where it is widened.
// LINALG-LABEL: func.func @main(%arg0: tensor<?x64xf32>, %arg1: tensor<?xi32>, %arg2: tensor<24x2x1x4x2x16xf32>, %arg3: tensor<?xi32>, %arg4: tensor<?x?xi32>
// LINALG-NOT:   torch.operator
// LINALG:       linalg.matmul
// LINALG:       arith.extui
// LINALG:       tm_tensor.scatter
// LINALG:       linalg.batch_matmul
// LINALG:       return {{.*}} : tensor<?x64xf32>, tensor<24x2x1x4x2x16xf32>

builtin.module {
  func.func @gptq_attn_1l_unfused(%0: !fg.tensor<[total_seq_len, 64], f32, cpu>, %1: !fg.tensor<[batch_plus_1], u32, cpu>, %2: !fg.buffer<[24, 2, 1, 4, 2, 16], f32, cpu>, %3: !fg.tensor<[batch], u32, cpu>, %4: !fg.tensor<[batch, max_pages], u32, cpu>) -> !fg.tensor<[total_seq_len, 64], f32, cpu> {
    %5 = fg.weight "freqs_cis" : !fg.tensor<[64, 16], f32, cpu>
    %6 = fg.weight "layers.0.qkv_proj.qweight" : !fg.tensor<[8, 128], i32, cpu>
    %7 = fg.weight "layers.0.qkv_proj.scales" : !fg.tensor<[2, 128], f16, cpu>
    %8 = fg.weight "layers.0.qkv_proj.qzeros" : !fg.tensor<[2, 16], i32, cpu>
    %9 = fg.qmatmul.gptq %0, %6, %7 zeros %8 {bits = 4 : i64, group_size = 32 : i64, sym = false, desc_act = false, zero_format = "v1"} : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[8, 128], i32, cpu>, !fg.tensor<[2, 128], f16, cpu> zeros !fg.tensor<[2, 16], i32, cpu> -> !fg.tensor<[total_seq_len, 128], f32, cpu>
    %10, %11, %12 = fg.split %9 {axis = 1 : i64} : !fg.tensor<[total_seq_len, 128], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>, !fg.tensor<[total_seq_len, 32], f32, cpu>
    %13 = fg.reshape %10 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %14 = fg.rope %13, %1, %3, %5 {interleaved = false} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[64, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %15 = fg.reshape %14 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    %16 = fg.reshape %11 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %17 = fg.rope %16, %1, %3, %5 {interleaved = false} : !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[64, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %18 = fg.kv_cache.store %2, %17, %1, %3, %4 {layer_idx = 0 : i64, key_or_value = 0 : i64} : !fg.buffer<[24, 2, 1, 4, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[24, 2, 1, 4, 2, 16], f32, cpu>
    %19 = fg.reshape %12 : !fg.tensor<[total_seq_len, 32], f32, cpu> -> !fg.tensor<[total_seq_len, 2, 16], f32, cpu>
    %20 = fg.kv_cache.store %18, %19, %1, %3, %4 {layer_idx = 0 : i64, key_or_value = 1 : i64} : !fg.buffer<[24, 2, 1, 4, 2, 16], f32, cpu>, !fg.tensor<[total_seq_len, 2, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.buffer<[24, 2, 1, 4, 2, 16], f32, cpu>
    %21 = fg.reshape %15 : !fg.tensor<[total_seq_len, 64], f32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %22 = fg.attention.paged %21, %1, %20, %3, %4 {layer_idx = 0 : i64, scale = 2.500000e-01 : f64, mask = "causal"} : !fg.tensor<[total_seq_len, 4, 16], f32, cpu>, !fg.tensor<[batch_plus_1], u32, cpu>, !fg.buffer<[24, 2, 1, 4, 2, 16], f32, cpu>, !fg.tensor<[batch], u32, cpu>, !fg.tensor<[batch, max_pages], u32, cpu> -> !fg.tensor<[total_seq_len, 4, 16], f32, cpu>
    %23 = fg.reshape %22 : !fg.tensor<[total_seq_len, 4, 16], f32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    %24 = fg.weight "layers.0.o_proj.qweight" : !fg.tensor<[8, 64], i32, cpu>
    %25 = fg.weight "layers.0.o_proj.scales" : !fg.tensor<[2, 64], f16, cpu>
    %26 = fg.weight "layers.0.o_proj.qzeros" : !fg.tensor<[2, 8], i32, cpu>
    %27 = fg.qmatmul.gptq %23, %24, %25 zeros %26 {bits = 4 : i64, group_size = 32 : i64, sym = false, desc_act = false, zero_format = "v1"} : !fg.tensor<[total_seq_len, 64], f32, cpu>, !fg.tensor<[8, 64], i32, cpu>, !fg.tensor<[2, 64], f16, cpu> zeros !fg.tensor<[2, 8], i32, cpu> -> !fg.tensor<[total_seq_len, 64], f32, cpu>
    func.return %27 : !fg.tensor<[total_seq_len, 64], f32, cpu>
  }
}

