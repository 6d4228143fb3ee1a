// The wgmma matmul's test diagram (issue 13) with an f32 result: C = A B, bf16 inputs, f32 accumulation.
// bench/prepare_hopper_check.sh compiles it with --kernel wgmma; re-size with --dims.
module {
  func.func @matmul_f32(%arg0: tensor<128x64xbf16, {axes = ["m", "k"]}>, %arg1: tensor<64x128xbf16, {axes = ["k", "n"]}>) -> tensor<128x128xf32, {axes = ["m", "n"]}> attributes {arg_names = ["A", "B"]} {
    %0 = "napkin.contract"(%arg0, %arg1) : (tensor<128x64xbf16, {axes = ["m", "k"]}>, tensor<64x128xbf16, {axes = ["k", "n"]}>) -> tensor<128x128xf32, {axes = ["m", "n"]}>
    return %0 : tensor<128x128xf32, {axes = ["m", "n"]}>
  }
}
