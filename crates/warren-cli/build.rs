//! Links the `warren` binary as a position-dependent executable on Linux.
//!
//! A position-independent `warren` spends a sixth of a `warren sandbox run -- /bin/true` (about
//! 0.18 ms of 4) before `main`: the dynamic loader applies about 20,000 relative relocations,
//! which writes (and so copies) every page of the 300 KB read-only-after-relocation segment. At
//! a fixed address there is nothing to relocate. The cost is that the binary's own code and data
//! are not randomized (shared libraries, stack, heap and mmap still are). Only this binary is
//! affected; the libraries and test binaries keep the default.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
