// fg.rms_norm with and without its perm operand lowers to aten in both modes (its torch impl
// calls the fusegraph::rms_norm custom op only on CUDA runs), so IREE and the torch-mlir
// backends compile it: the perm is one index_select on the last dim, a gather in linalg.

// RUN: fusegraph lower %s --mode custom | filecheck %s --check-prefix=CUSTOM
// RUN: fusegraph lower %s --mode decomposed --output-type linalg-on-tensors | filecheck %s --check-prefix=LINALG

// CUSTOM-LABEL: func.func @main(%arg0: !torch.vtensor<[?,8],f16>, %arg1: !torch.vtensor<[8],f16>, %arg2: !torch.vtensor<[8],si32>)
// CUSTOM-NOT:   torch.operator
// CUSTOM:       torch.aten.rsqrt
// CUSTOM:       %[[N:.*]] = torch.prims.convert_element_type %{{.*}} -> !torch.vtensor<[?,8],f16>
// CUSTOM:       %[[P:.*]] = torch.aten.index_select %[[N]], %{{.*}}, %arg2 : !torch.vtensor<[?,8],f16>, !torch.int, !torch.vtensor<[8],si32> -> !torch.vtensor<[?,8],f16>
// CUSTOM:       torch.aten.rsqrt
// CUSTOM-NOT:   torch.aten.index_select
// CUSTOM-NOT:   torch.operator
// CUSTOM:       return %[[P]], %{{.*}} : !torch.vtensor<[?,8],f16>, !torch.vtensor<[?,8],f16>

// LINALG-LABEL: func.func @main(%arg0: tensor<?x8xf16>, %arg1: tensor<8xf16>, %arg2: tensor<8xi32>)
// LINALG:       math.rsqrt
// LINALG:       %[[G:.*]] = linalg.generic {{.*}} ins(%arg2 : tensor<8xi32>)
// LINALG:         arith.index_cast %{{.*}} : i32 to index
// LINALG:         tensor.extract
// LINALG:       return %[[G]], %{{.*}} : tensor<?x8xf16>, tensor<?x8xf16>

builtin.module {
  func.func @norms(%0: !fg.tensor<[t, 8], f16, cpu>) -> (!fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu>) {
    %1 = fg.weight "norm.weight" : !fg.tensor<[8], f16, cpu>
    %2 = fg.weight "q_proj.perm" : !fg.tensor<[8], i32, cpu>
    %3 = fg.rms_norm %0, %1 perm %2 {eps = 1.000000e-05 : f64} : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[8], f16, cpu> perm !fg.tensor<[8], i32, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    %4 = fg.rms_norm %0, %1 {eps = 1.000000e-05 : f64} : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[8], f16, cpu> -> !fg.tensor<[t, 8], f16, cpu>
    func.return %3, %4 : !fg.tensor<[t, 8], f16, cpu>, !fg.tensor<[t, 8], f16, cpu>
  }
}
