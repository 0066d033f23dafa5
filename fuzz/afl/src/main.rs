//! One AFL++ harness for every Dunes fuzz target; the target is named by
//! `DUNES_FUZZ_TARGET` (see `dunes_fuzz::TARGETS`).

fn main() {
    let name = std::env::var("DUNES_FUZZ_TARGET").unwrap_or_default();
    let Some((_, target)) = dunes_fuzz::TARGETS.iter().find(|(n, _)| *n == name) else {
        eprintln!(
            "set DUNES_FUZZ_TARGET to one of: {}",
            dunes_fuzz::TARGETS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        target(data);
    });
}
