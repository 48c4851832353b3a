// RUN: fusegraph opt %s -p canonicalize --split-input-file | filecheck %s

// CHECK-LABEL: func.func @reshape_reshape_identity
// CHECK-NEXT: func.return %0
builtin.module {
  func.func @reshape_reshape_identity(%0: !fg.tensor<[T, 64], f32, cpu>) -> !fg.tensor<[T, 64], f32, cpu> {
    %1 = fg.reshape %0 : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 4, 16], f32, cpu>
    %2 = fg.reshape %1 : !fg.tensor<[T, 4, 16], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    func.return %2 : !fg.tensor<[T, 64], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @reshape_reshape
// CHECK-NEXT: fg.reshape %0 : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 2, 32], f32, cpu>
// CHECK-NEXT: func.return
builtin.module {
  func.func @reshape_reshape(%0: !fg.tensor<[T, 64], f32, cpu>) -> !fg.tensor<[T, 2, 32], f32, cpu> {
    %1 = fg.reshape %0 : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 4, 16], f32, cpu>
    %2 = fg.reshape %1 : !fg.tensor<[T, 4, 16], f32, cpu> -> !fg.tensor<[T, 2, 32], f32, cpu>
    func.return %2 : !fg.tensor<[T, 2, 32], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @keep_reshape_of_relu
// CHECK-NEXT: fg.relu
// CHECK-NEXT: fg.reshape
builtin.module {
  func.func @keep_reshape_of_relu(%0: !fg.tensor<[T, 64], f32, cpu>) -> !fg.tensor<[T, 4, 16], f32, cpu> {
    %1 = fg.relu %0 : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    %2 = fg.reshape %1 : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 4, 16], f32, cpu>
    func.return %2 : !fg.tensor<[T, 4, 16], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @cast_same_dtype
// CHECK-NEXT: func.return %0
builtin.module {
  func.func @cast_same_dtype(%0: !fg.tensor<[T, 64], f32, cpu>) -> !fg.tensor<[T, 64], f32, cpu> {
    %1 = fg.cast %0 : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    func.return %1 : !fg.tensor<[T, 64], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @keep_cast_other_dtype
// CHECK-NEXT: fg.cast
builtin.module {
  func.func @keep_cast_other_dtype(%0: !fg.tensor<[T, 64], f32, cpu>) -> !fg.tensor<[T, 64], f16, cpu> {
    %1 = fg.cast %0 : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 64], f16, cpu>
    func.return %1 : !fg.tensor<[T, 64], f16, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @permute_permute_identity
// CHECK-NEXT: func.return %0
builtin.module {
  func.func @permute_permute_identity(%0: !fg.tensor<[T, 64], f32, cpu>) -> !fg.tensor<[T, 64], f32, cpu> {
    %1 = fg.permute %0 {perm = array<i64: 1, 0>} : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[64, T], f32, cpu>
    %2 = fg.permute %1 {perm = array<i64: 1, 0>} : !fg.tensor<[64, T], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    func.return %2 : !fg.tensor<[T, 64], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @permute_permute
// CHECK-NEXT: fg.permute %0 {perm = array<i64: 2, 0, 1>} : !fg.tensor<[2, 3, 4], f32, cpu> -> !fg.tensor<[4, 2, 3], f32, cpu>
// CHECK-NEXT: func.return
builtin.module {
  func.func @permute_permute(%0: !fg.tensor<[2, 3, 4], f32, cpu>) -> !fg.tensor<[4, 2, 3], f32, cpu> {
    %1 = fg.permute %0 {perm = array<i64: 1, 2, 0>} : !fg.tensor<[2, 3, 4], f32, cpu> -> !fg.tensor<[3, 4, 2], f32, cpu>
    %2 = fg.permute %1 {perm = array<i64: 1, 2, 0>} : !fg.tensor<[3, 4, 2], f32, cpu> -> !fg.tensor<[4, 2, 3], f32, cpu>
    func.return %2 : !fg.tensor<[4, 2, 3], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @keep_permute
// CHECK-NEXT: fg.permute
builtin.module {
  func.func @keep_permute(%0: !fg.tensor<[T, 64], f32, cpu>) -> !fg.tensor<[64, T], f32, cpu> {
    %1 = fg.permute %0 {perm = array<i64: 1, 0>} : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[64, T], f32, cpu>
    func.return %1 : !fg.tensor<[64, T], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @split_concat
// CHECK-NEXT: func.return %0, %1, %0
builtin.module {
  func.func @split_concat(%0: !fg.tensor<[T, 64], f32, cpu>, %1: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 64], f32, cpu>) {
    %2 = fg.concat %0, %1, %0 {axis = 1 : i64} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 192], f32, cpu>
    %3, %4, %5 = fg.split %2 {axis = 1 : i64} : !fg.tensor<[T, 192], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 64], f32, cpu>
    func.return %3, %4, %5 : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 64], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @keep_split_concat_other_sizes
// CHECK-NEXT: fg.concat
// CHECK-NEXT: fg.split
builtin.module {
  func.func @keep_split_concat_other_sizes(%0: !fg.tensor<[T, 64], f32, cpu>, %1: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 96], f32, cpu>) {
    %2 = fg.concat %0, %1 {axis = 1 : i64} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 128], f32, cpu>
    %3, %4 = fg.split %2 {axis = 1 : i64} : !fg.tensor<[T, 128], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 96], f32, cpu>
    func.return %3, %4 : !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 96], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @keep_split_concat_other_axis
// CHECK-NEXT: fg.concat
// CHECK-NEXT: fg.split
builtin.module {
  func.func @keep_split_concat_other_axis(%0: !fg.tensor<[T, 64], f32, cpu>, %1: !fg.tensor<[T, 64], f32, cpu>) -> (!fg.tensor<[2*T, 32], f32, cpu>, !fg.tensor<[2*T, 32], f32, cpu>) {
    %2 = fg.concat %0, %1 {axis = 0 : i64} : !fg.tensor<[T, 64], f32, cpu>, !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[2*T, 64], f32, cpu>
    %3, %4 = fg.split %2 {axis = 1 : i64} : !fg.tensor<[2*T, 64], f32, cpu> -> !fg.tensor<[2*T, 32], f32, cpu>, !fg.tensor<[2*T, 32], f32, cpu>
    func.return %3, %4 : !fg.tensor<[2*T, 32], f32, cpu>, !fg.tensor<[2*T, 32], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @concat_split
// CHECK-NEXT: func.return %0
builtin.module {
  func.func @concat_split(%0: !fg.tensor<[T, 64], f32, cpu>) -> !fg.tensor<[T, 64], f32, cpu> {
    %1, %2 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 16], f32, cpu>, !fg.tensor<[T, 48], f32, cpu>
    %3 = fg.concat %1, %2 {axis = 1 : i64} : !fg.tensor<[T, 16], f32, cpu>, !fg.tensor<[T, 48], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    func.return %3 : !fg.tensor<[T, 64], f32, cpu>
  }
}
// -----
// CHECK-LABEL: func.func @keep_concat_split_reordered
// CHECK-NEXT: fg.split
// CHECK-NEXT: fg.concat
builtin.module {
  func.func @keep_concat_split_reordered(%0: !fg.tensor<[T, 64], f32, cpu>) -> !fg.tensor<[T, 64], f32, cpu> {
    %1, %2 = fg.split %0 {axis = 1 : i64} : !fg.tensor<[T, 64], f32, cpu> -> !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu>
    %3 = fg.concat %2, %1 {axis = 1 : i64} : !fg.tensor<[T, 32], f32, cpu>, !fg.tensor<[T, 32], f32, cpu> -> !fg.tensor<[T, 64], f32, cpu>
    func.return %3 : !fg.tensor<[T, 64], f32, cpu>
  }
}
