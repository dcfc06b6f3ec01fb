pub mod memory_broker;
