// The wgmma matmul's test diagram (issue 13) with B laid out (n, k), k contiguous (the wgmma's
// B K-major, as attention's K is): C = A Bᵀ in bf16 with f32 accumulation, cast to bf16.
// bench/prepare_hopper_check.sh compiles it with --kernel wgmma; re-size with --dims.
module {
  func.func @matmul_nt(%arg0: tensor<128x64xbf16, {axes = ["m", "k"]}>, %arg1: tensor<128x64xbf16, {axes = ["n", "k"]}>) -> tensor<128x128xbf16, {axes = ["m", "n"]}> attributes {arg_names = ["A", "B"]} {
    %0 = "napkin.contract"(%arg0, %arg1) : (tensor<128x64xbf16, {axes = ["m", "k"]}>, tensor<128x64xbf16, {axes = ["n", "k"]}>) -> tensor<128x128xf32, {axes = ["m", "n"]}>
    %1 = "napkin.cast"(%0) : (tensor<128x128xf32, {axes = ["m", "n"]}>) -> tensor<128x128xbf16, {axes = ["m", "n"]}>
    return %1 : tensor<128x128xbf16, {axes = ["m", "n"]}>
  }
}
