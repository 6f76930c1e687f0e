//! `vl3c chat`: an interactive conversation about images and videos. Each line on stdin is a
//! user turn; the answer streams to stdout. The vision inputs are encoded once, and every turn
//! re-reads the whole conversation, as transformers' chat template renders it.

use super::session::{summary, Session, SessionArgs};
use anyhow::{Context, Result};
use std::io::{IsTerminal, Write};
use vl3c_frontends::limits::{read_line_bounded, MAX_LINE_BYTES};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    session: SessionArgs,
    /// Positions the KV cache keeps for the conversation beyond the first turn (when
    /// --max-context is not given).
    #[arg(long, default_value_t = 4096)]
    history_room: usize,
}

pub fn run(args: Args) -> Result<()> {
    let mut session = Session::open(&args.session, &[String::new()], args.history_room)?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("chat: one message per line; an empty line or end of input (Ctrl-D) ends the conversation");
    }
    let mut history: Vec<(String, String)> = Vec::new();
    let mut stdout = std::io::stdout().lock();
    let mut stdin = std::io::stdin().lock();
    loop {
        if interactive {
            eprint!("> ");
        }
        // One turn per line, each bounded: input without newlines (`< /dev/zero`) is an error,
        // not a line that grows until memory runs out.
        let line =
            read_line_bounded(&mut stdin, MAX_LINE_BYTES, "chat message").context("stdin")?;
        let Some(line) = line else { break };
        let text = line.trim();
        if text.is_empty() {
            break;
        }
        let answer = session.answer(&history, text, &mut stdout)?;
        stdout.flush().context("cannot write to stdout")?;
        eprintln!("{}", summary(&answer));
        history.push((text.to_string(), session.answer_text(&answer)?));
    }
    Ok(())
}
