//! Compiles `proto/roomcast.proto` with a pure-Rust compiler (protox), so no
//! system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/roomcast.proto");
    let descriptors = protox::compile(["roomcast.proto"], ["proto"])?;
    prost_build::Config::new()
        // `bytes` fields decode as `Bytes` slices of the received buffer: zero-copy.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
