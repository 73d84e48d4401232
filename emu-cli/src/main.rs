//! `emu`: the command-line front end. Each subcommand is one library call; no tensor code here.

fn main() {
    println!("emu {}", env!("CARGO_PKG_VERSION"));
}
