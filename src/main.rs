//! The `swf` binary: everything lives in the library (`singularity_workflow::cli`).

fn main() {
    std::process::exit(singularity_workflow::cli::main());
}
