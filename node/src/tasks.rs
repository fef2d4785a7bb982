//! Every task a node starts, so that [`crate::Node::shutdown`] stops all of them and waits for
//! them to end: a task runs until it finishes or the node's cancellation token fires, whichever
//! comes first (a task is cancelled at its next `.await`; store writes are synchronous, so none
//! is cut in half, and the store is flushed after the last task ended).

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The node's tasks.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    /// Runs `task` until it ends or the node stops. After [`Tasks::stop`] it is not started.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.stop.is_cancelled() {
            return;
        }
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Cancels every task and waits until all have ended.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// How many tasks are running.
    pub(crate) fn len(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_ends_every_task_and_refuses_new_ones() {
        let tasks = Tasks::default();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        for _ in 0..3 {
            let tx = tx.clone();
            tasks.spawn(async move {
                let _keep = tx;
                std::future::pending::<()>().await;
            });
        }
        drop(tx);
        assert_eq!(tasks.len(), 3);
        tasks.stop().await;
        assert_eq!(tasks.len(), 0);
        assert!(rx.recv().await.is_none(), "every task dropped its sender");
        tasks.spawn(async {});
        assert_eq!(tasks.len(), 0, "nothing starts after stop");
    }
}
