//! The oar binary.
fn main() {}
