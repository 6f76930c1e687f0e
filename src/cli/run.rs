//! `vl3c run`: ask about images and videos. Each `--prompt` is its own conversation over the same
//! inputs, which are encoded once. The generated text streams to stdout token by token;
//! progress and the one-line summaries go to stderr, so stdout holds only the answers.

use super::session::{summary, Session, SessionArgs};
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    session: SessionArgs,
    /// The user's message; repeat to ask several questions about the same images and videos
    /// (each a new conversation; the vision encoder runs once for all of them).
    #[arg(long, required = true)]
    prompt: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let mut session = Session::open(&args.session, &args.prompt, 0)?;
    let mut stdout = std::io::stdout().lock();
    let n = args.prompt.len();
    for (i, prompt) in args.prompt.iter().enumerate() {
        if n > 1 {
            eprintln!("[{}/{n}] {prompt}", i + 1);
        }
        let answer = session.answer(&[], prompt, &mut stdout)?;
        eprintln!("{}", summary(&answer));
    }
    Ok(())
}
