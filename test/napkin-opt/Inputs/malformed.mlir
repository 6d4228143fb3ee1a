// Input for errors.mlir: an unknown op on line 6, column 3.


func.func @f(%a: tensor<4xf32, {axes = ["m"]}>) {
  // (the next line is the error)
  napkin_contract %a
  return
}
