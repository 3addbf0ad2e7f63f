//! Links the baton binary with `src/layout.ld`, which packs the functions
//! each process runs together so that a process maps few pages of code.
//! `bench/layout.sh` writes that file; `bench/layout.py` says why.
//!
//! The script only adds output sections (`INSERT BEFORE .text`), which the
//! GNU and LLVM linkers support. It is left out where it cannot help or could
//! fail: outside Linux, under gold or mold, without v0 symbol names (set in
//! `.cargo/config.toml`; its patterns would match nothing), and when
//! `BATON_CODE_LAYOUT=0`.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=src/layout.ld");
    println!("cargo:rerun-if-env-changed=BATON_CODE_LAYOUT");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux")
        || env::var("BATON_CODE_LAYOUT").as_deref() == Ok("0")
    {
        return;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let flags: Vec<&str> = flags.split('\x1f').collect();
    let v0 = flags
        .iter()
        .any(|f| f.ends_with("symbol-mangling-version=v0"));
    let other_linker = flags
        .iter()
        .any(|f| f.contains("fuse-ld=gold") || f.contains("fuse-ld=mold"));
    if !v0 || other_linker {
        return;
    }
    let script =
        Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("src/layout.ld");
    if script.exists() {
        // Two arguments, so that a comma in the path cannot split it.
        println!("cargo:rustc-link-arg-bins=-T");
        println!("cargo:rustc-link-arg-bins={}", script.display());
    }
}
