//! Compiles the gRPC protocols in `proto/` (Zeebe's gateway and the standard health service)
//! into Rust with `tonic-prost-build`, server and client stubs both. `protoc` comes from the
//! `protoc-bin-vendored` crate, so a fresh machine needs no manual install.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: the build script is single-threaded; nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("PROTOC", protoc);
    }
    println!("cargo:rerun-if-changed=proto/gateway.proto");
    println!("cargo:rerun-if-changed=proto/health.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/gateway.proto", "proto/health.proto"], &["proto"])?;
    Ok(())
}
