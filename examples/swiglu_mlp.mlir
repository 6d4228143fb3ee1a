// SwiGLU MLP (LLaMA): Y = (silu(X W1) · (X W3)) W2.
// Written by examples/build_examples.py; re-size with --dims.
module {
  func.func @swiglu_mlp(%arg0: tensor<45x32xbf16, {axes = ["m", "k"]}>, %arg1: tensor<32x96xbf16, {axes = ["k", "f"]}>, %arg2: tensor<32x96xbf16, {axes = ["k", "f"]}>, %arg3: tensor<96x24xbf16, {axes = ["f", "n"]}>) -> tensor<45x24xbf16, {axes = ["m", "n"]}> attributes {arg_names = ["X", "W1", "W3", "W2"]} {
    %0 = "napkin.contract"(%arg0, %arg1) : (tensor<45x32xbf16, {axes = ["m", "k"]}>, tensor<32x96xbf16, {axes = ["k", "f"]}>) -> tensor<45x96xf32, {axes = ["m", "f"]}>
    %1 = "napkin.silu"(%0) : (tensor<45x96xf32, {axes = ["m", "f"]}>) -> tensor<45x96xf32, {axes = ["m", "f"]}>
    %2 = "napkin.contract"(%arg0, %arg2) : (tensor<45x32xbf16, {axes = ["m", "k"]}>, tensor<32x96xbf16, {axes = ["k", "f"]}>) -> tensor<45x96xf32, {axes = ["m", "f"]}>
    %3 = "napkin.mul"(%1, %2) : (tensor<45x96xf32, {axes = ["m", "f"]}>, tensor<45x96xf32, {axes = ["m", "f"]}>) -> tensor<45x96xf32, {axes = ["m", "f"]}>
    %4 = "napkin.cast"(%3) : (tensor<45x96xf32, {axes = ["m", "f"]}>) -> tensor<45x96xbf16, {axes = ["m", "f"]}>
    %5 = "napkin.contract"(%4, %arg3) : (tensor<45x96xbf16, {axes = ["m", "f"]}>, tensor<96x24xbf16, {axes = ["f", "n"]}>) -> tensor<45x24xf32, {axes = ["m", "n"]}>
    %6 = "napkin.cast"(%5) : (tensor<45x24xf32, {axes = ["m", "n"]}>) -> tensor<45x24xbf16, {axes = ["m", "n"]}>
    return %6 : tensor<45x24xbf16, {axes = ["m", "n"]}>
  }
}
