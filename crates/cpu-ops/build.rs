//! Sets `cfg(unoptimised)` when this crate is compiled at opt-level 0, where the f16 products
//! are slower than candle's gemm (see `step_weights::f16_copy`).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(unoptimised)");
    if std::env::var("OPT_LEVEL").as_deref() == Ok("0") {
        println!("cargo::rustc-cfg=unoptimised");
    }
}
