//! `kubectl-ferro`: ferroctl as a kubectl plugin (`kubectl ferro console my-vm`).

fn main() -> std::process::ExitCode {
    ferroctl::main("kubectl ferro")
}
