//! Benchmarks for Switchyard. `inproc` measures ONNX Runtime in-process through
//! the server's own executor (the baseline every server number is compared with).
