//! Helpers for tests that run the real servers: bounded polling for an
//! observable state, and bounded joins. Waits decide nothing by themselves:
//! they only bound how long a test looks for what it asserts.

use std::{future::Future, time::Duration};

use tokio::task::JoinHandle;

/// Polls `f` every 50 ms until it is true; panics naming `what` after 10 s.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Waits at most `within` for `task`; an error says which task and why.
pub async fn join_within<T>(
    task: JoinHandle<T>,
    within: Duration,
    what: &str,
) -> std::io::Result<T> {
    match tokio::time::timeout(within, task).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(join)) => Err(std::io::Error::other(format!("{what}: {join}"))),
        Err(_) => Err(std::io::Error::other(format!(
            "{what} did not stop within {within:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_joins_report_what_hung() {
        let quick = tokio::spawn(async { 7 });
        assert_eq!(
            join_within(quick, Duration::from_secs(1), "quick")
                .await
                .expect("joined"),
            7
        );
        let hung = tokio::spawn(std::future::pending::<()>());
        let err = join_within(hung, Duration::from_millis(20), "hung")
            .await
            .expect_err("timed out");
        assert!(err.to_string().contains("hung did not stop"), "{err}");
        let mut n = 0;
        eventually("a counter reaches 3", || {
            n += 1;
            std::future::ready(n >= 3)
        })
        .await;
    }
}
