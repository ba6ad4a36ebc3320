//! The `kanoclip` command line (its code is the library's `cli` module).

fn main() -> std::process::ExitCode {
    kanoclip::cli::main()
}
