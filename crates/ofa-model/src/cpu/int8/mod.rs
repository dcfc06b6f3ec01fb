//! int8 on the CPU (`--precision int8`): weights quantised and packed once at load
//! (`quant`), linear layers over them (`linear`, with the AVX-512 VNNI tile in `vnni`), and the
//! ResNet's bottleneck blocks channels-last (`resnet`).

pub mod linear;
pub mod quant;
pub mod resnet;
pub mod vnni;
