#!/bin/sh
# packaging/build-flags.sh rustflags|cflags
#
# The compiler flags a reproducible release build of Baton adds to the
# distribution's own (RUSTFLAGS / CFLAGS from the environment, appended
# last so they win), used by debian/rules and packaging/tests/reproducible.sh.
# Every build-specific directory is mapped to a fixed name, so two builds of
# one commit in different directories give the same bytes:
# (rustc uses the last matching map, so the target dir, often inside SRC,
# comes after SRC.)
#   - the source tree (SRC, default: the current directory) -> /usr/src/baton
#   - the target dir (CARGO_TARGET_DIR, default SRC/target): build scripts'
#     OUT_DIR files (ring's generated code) are compiled from there
#   - CARGO_HOME (default ~/.cargo): the crates' sources, Rust and C
# and the symbol names are v0 (-Csymbol-mangling-version=v0), which the
# code layout (src/layout.ld, build.rs) needs: it comes from here, not from
# .cargo/config.toml, which RUSTFLAGS replaces.
set -eu
SRC=${SRC:-$(pwd)}
TARGET=${CARGO_TARGET_DIR:-$SRC/target}
CHOME=${CARGO_HOME:-$HOME/.cargo}
case "${1:-}" in
    rustflags)
        printf '%s\n' "-Csymbol-mangling-version=v0 --remap-path-prefix=$CHOME=/usr/src/cargo-home --remap-path-prefix=$SRC=/usr/src/baton --remap-path-prefix=$TARGET=/usr/src/baton/target ${RUSTFLAGS:-}"
        ;;
    cflags)
        printf '%s\n' "${CFLAGS:-} -ffile-prefix-map=$TARGET=/usr/src/baton/target -ffile-prefix-map=$SRC=/usr/src/baton -ffile-prefix-map=$CHOME=/usr/src/cargo-home"
        ;;
    *)
        echo "usage: $0 rustflags|cflags" >&2
        exit 2
        ;;
esac
