//! Answering the waiting room's proof-of-work challenge, as any client
//! would: from the documented 428 problem alone (`challenge`, `difficulty`,
//! `algorithm`), not from the waiting room's code.
//!
//! The answer is a nonce such that SHA-256 of `<challenge>:<nonce>` starts
//! with `difficulty` zero bits; it goes back as the JSON body of the join.
//! Solving is CPU work, so it runs on the blocking pool, at most one solve
//! per core at a time: visitors that must solve queue for a core, as they
//! would on their own machines, without starving the harness's runtime.

use std::sync::OnceLock;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// The only algorithm the waiting room documents.
pub const ALGORITHM: &str = "sha256-leading-zero-bits";
/// Refuse to try harder than this (2^32 hashes is hours of one core).
pub const MAX_DIFFICULTY: u32 = 32;

/// A solved challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solved {
    /// The join body that answers it.
    pub body: Value,
    /// Its difficulty.
    pub difficulty: u32,
    /// Nonces tried.
    pub hashes: u64,
}

/// Leading zero bits of SHA-256(`challenge` ":" `nonce`).
pub fn zero_bits(challenge: &str, nonce: &str) -> u32 {
    let digest = Sha256::new().chain_update(challenge).chain_update(":").chain_update(nonce).finalize();
    let mut bits = 0;
    for b in digest {
        bits += b.leading_zeros();
        if b != 0 {
            break;
        }
    }
    bits
}

/// The first decimal nonce that solves `challenge` at `difficulty`, and how
/// many were tried.
pub fn solve(challenge: &str, difficulty: u32) -> (String, u64) {
    let mut n = 0u64;
    loop {
        let nonce = n.to_string();
        n += 1;
        if zero_bits(challenge, &nonce) >= difficulty {
            return (nonce, n);
        }
    }
}

/// The challenge and difficulty of a 428 problem body, or what is wrong with it.
pub fn read(problem: &Value) -> Result<(String, u32), &'static str> {
    let challenge = problem["challenge"].as_str().filter(|c| !c.is_empty()).ok_or("no_challenge")?;
    if problem["algorithm"] != ALGORITHM {
        return Err("unknown_algorithm");
    }
    let difficulty = problem["difficulty"]
        .as_u64()
        .and_then(|d| u32::try_from(d).ok())
        .filter(|d| *d <= MAX_DIFFICULTY)
        .ok_or("bad_difficulty")?;
    Ok((challenge.to_owned(), difficulty))
}

fn cores() -> &'static Semaphore {
    static CORES: OnceLock<Semaphore> = OnceLock::new();
    CORES.get_or_init(|| Semaphore::new(std::thread::available_parallelism().map_or(2, usize::from)))
}

/// Solve the challenge of a 428 problem body (on a free core).
pub async fn answer(problem: &Value) -> Result<Solved, &'static str> {
    let (challenge, difficulty) = read(problem)?;
    let _core = cores().acquire().await.map_err(|_| "solver_closed")?;
    let solved = tokio::task::spawn_blocking(move || {
        let (nonce, hashes) = solve(&challenge, difficulty);
        Solved { body: json!({ "challenge": challenge, "nonce": nonce }), difficulty, hashes }
    })
    .await
    .map_err(|_| "solver_panicked")?;
    Ok(solved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_solution_has_the_zero_bits_asked_for() {
        let (nonce, hashes) = solve("v1.q.10.1.seed.mac", 10);
        assert!(zero_bits("v1.q.10.1.seed.mac", &nonce) >= 10);
        assert_eq!(nonce.parse::<u64>().ok(), Some(hashes - 1));
        // SHA-256(":0") starts 0x19 (3 zero bits), SHA-256(":52") 0x078b (5): the first with 4 or more.
        assert_eq!((zero_bits("", "0"), zero_bits("", "52")), (3, 5));
        assert_eq!(solve("", 4), ("52".to_owned(), 53));
    }

    #[test]
    fn problems_are_read_from_their_documented_members() {
        let ok = json!({"challenge": "v1.x", "difficulty": 12, "algorithm": ALGORITHM});
        assert_eq!(read(&ok), Ok(("v1.x".to_owned(), 12)));
        assert_eq!(read(&json!({"difficulty": 12, "algorithm": ALGORITHM})), Err("no_challenge"));
        assert_eq!(read(&json!({"challenge": "v1.x", "difficulty": 12, "algorithm": "md5"})), Err("unknown_algorithm"));
        assert_eq!(
            read(&json!({"challenge": "v1.x", "difficulty": 40, "algorithm": ALGORITHM})),
            Err("bad_difficulty")
        );
    }
}
