//! A component built for another world (`wasi:cli/command`): it exports
//! `wasi:cli/run`, not the doctor `check` interface, so the host must report
//! it as a load error naming the file.

fn main() {
    println!("hello from another world");
}
