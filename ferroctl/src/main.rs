//! `ferroctl`: see the library ([`ferroctl::main`]).

fn main() -> std::process::ExitCode {
    ferroctl::main("ferroctl")
}
