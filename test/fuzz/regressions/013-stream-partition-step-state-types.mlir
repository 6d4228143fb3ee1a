// fuzz failure [verifier-after-pass]: after napkin-stream-partition{axis=k size=1}: loc("-":4:10): 'napkin.stream' op step must yield a new state of the types init yields
// inputs: napkin_mlir.check.reference.random_inputs(<argument types>, seed=16000751)
// pipeline: builtin.module(napkin-verify,napkin-stream-partition{axis=k size=1},napkin-verify)
// replay: python -m napkin_mlir.fuzz --replay 013-stream-partition-step-state-types.json
module {
  func.func @fuzz16000751(%arg0: tensor<1x1x1xf32, {axes = ["j", "k", "z"]}>) -> tensor<1xf32, {axes = ["j"]}> attributes {arg_names = ["A0"]} {
    %0 = "napkin.softmax"(%arg0) {axis = "k"} : (tensor<1x1x1xf32, {axes = ["j", "k", "z"]}>) -> tensor<1x1x1xf32, {axes = ["j", "k", "z"]}>
    %1 = "napkin.contract"(%0, %arg0) : (tensor<1x1x1xf32, {axes = ["j", "k", "z"]}>, tensor<1x1x1xf32, {axes = ["j", "k", "z"]}>) -> tensor<1xf32, {axes = ["j"]}>
    return %1 : tensor<1xf32, {axes = ["j"]}>
  }
}
