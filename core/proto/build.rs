//! Compiles the protos with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/cachew.proto");
    let fds = protox::compile(["proto/cachew.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".cachew.v1.TensorProto.data")
        .compile_fds(fds)?;
    Ok(())
}
