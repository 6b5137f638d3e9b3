//! The adapter against a real Redis Cluster that the test starts (see
//! `cluster.rs`; skipped with a message when Redis is not installed, except
//! in CI).

mod cluster;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use cluster::TestCluster;
use feed_domain::{FeedStorage, IdempotencyKey, ItemId, Keyed, RankedFeeds, StorageError, UserId};
use feed_redis::{
    Before, Breaker, BreakerSettings, Cluster, ClusterSettings, Credentials, Loader,
    RedisFeedStorage, RedisStoreError, VersionInfo, carry, keys,
};

/// The time limit of the calls whose limit is under test.
const TIMEOUT: Duration = Duration::from_millis(300);
/// What a call bounded by [`TIMEOUT`] may take beyond it on a shared,
/// busy machine: the timer fires late, the task is scheduled late.
const SLACK: Duration = Duration::from_millis(500);
/// The time limit of calls whose limit is not under test: never reached
/// by a cluster that is up, however busy the machine.
const GENEROUS: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn settings(cluster: &TestCluster, timeout: Duration) -> ClusterSettings {
    ClusterSettings {
        nodes: cluster.urls(),
        timeout,
        credentials: Credentials {
            username: None,
            password: Some(cluster::PASSWORD.into()),
        },
        ca_pem: cluster.ca_pem(),
    }
}

fn breaker() -> Arc<Breaker> {
    Arc::new(Breaker::new(BreakerSettings {
        failures: 3,
        open_for: Duration::from_millis(200),
    }))
}

/// A version's feeds, as a frontend's snapshot would hold them.
#[derive(Debug, Clone)]
struct Feeds(Arc<HashMap<u64, Vec<u32>>>);

impl RankedFeeds for Feeds {
    fn feed(&self, user: UserId) -> Option<&[u32]> {
        self.0.get(&user.get()).map(Vec::as_slice)
    }

    fn users(&self) -> u32 {
        self.0.len() as u32
    }

    /// Positions in id order, as a snapshot numbers its users.
    fn lookup(&self, user: UserId) -> Option<(u32, &[u32])> {
        let feed = self.feed(user)?;
        let position = self.0.keys().filter(|&&id| id < user.get()).count();
        Some((position as u32, feed))
    }
}

fn feeds(list: &[(u64, Vec<u32>)]) -> Feeds {
    Feeds(Arc::new(list.iter().cloned().collect()))
}

/// Describes `feeds` as a new version (of snapshot `snapshot`) and
/// publishes it.
fn publish(loader: &mut Loader, feeds: &[(u64, Vec<u32>)], snapshot: u64) -> u64 {
    let version = loader.new_version().unwrap();
    loader
        .publish(&VersionInfo {
            version,
            users: feeds.len() as u64,
            items: feeds.iter().map(|f| f.1.len() as u64).sum(),
            created_unix_ms: 1,
            snapshot,
        })
        .unwrap();
    version
}

/// Waits until every write made through this thread's connection of
/// `frontend` is on a replica: `WAIT 1`, again until one replica has it.
async fn wait_replicated(frontend: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut connection = frontend.connection().await.unwrap();
    loop {
        let acked: redis::RedisResult<i64> = redis::cmd("WAIT")
            .arg(1)
            .arg(100)
            .query_async(&mut connection)
            .await;
        if acked.as_ref().is_ok_and(|&n| n >= 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no replica acknowledged the writes within 30 s: {acked:?}"
        );
    }
}

/// The adapter's error behind a failed call, if it was one.
fn cause(error: &StorageError) -> Option<&RedisStoreError> {
    match error {
        StorageError::Backend(cause) => cause.downcast_ref(),
        StorageError::UnknownUser(_) => None,
    }
}

/// Whether the call that failed with `error` may still have run on a node:
/// it was sent, and no error reply of the node says it did not (a time
/// limit, or a connection lost, loses the answer but maybe not the call).
fn may_have_run(error: &StorageError) -> bool {
    match cause(error) {
        Some(
            RedisStoreError::BreakerOpen
            | RedisStoreError::Corrupt(_)
            | RedisStoreError::Retired(_)
            | RedisStoreError::Sealed(_)
            | RedisStoreError::NotMapped(_),
        ) => false,
        Some(RedisStoreError::Redis(e)) => !matches!(e.kind(), redis::ErrorKind::Server(_)),
        Some(RedisStoreError::Timeout(_)) | None => true,
    }
}

async fn take(
    storage: &RedisFeedStorage<Feeds>,
    user: u64,
    max: usize,
) -> Result<Vec<u32>, StorageError> {
    let mut out = Vec::new();
    let taken = storage.take_next(UserId::new(user), max, &mut out).await?;
    assert_eq!(taken.count, out.len());
    Ok(out.into_iter().map(ItemId::get).collect())
}

#[test]
fn feeds_are_handed_out_in_order_once_across_frontends_and_versions() {
    let Some(cluster) = TestCluster::start(3, 0) else {
        return;
    };
    let sparse = 9_007_199_254_740_993u64;
    let feeds = vec![
        (1, (100..110).collect::<Vec<u32>>()),
        (2, vec![7]),
        (sparse, (1..=300).collect()),
        (4, Vec::new()),
    ];
    // The nodes ask for a password: a client without it, or with a wrong
    // one, gets nothing.
    for password in [None, Some("wrong".to_owned())] {
        let mut anonymous = settings(&cluster, GENEROUS);
        anonymous.credentials.password = password;
        let refused = Loader::connect(&anonymous).unwrap_err().to_string();
        assert!(refused.contains("uthentication"), "{refused}");
    }
    let mut loader = Loader::connect(&settings(&cluster, GENEROUS)).unwrap();
    let first = publish(&mut loader, &feeds, 0xfeed);
    let feeds = self::feeds(&feeds);
    runtime().block_on(async {
        let connect = Cluster::connect(&settings(&cluster, GENEROUS))
            .await
            .unwrap();
        let frontend = Arc::new(connect);
        assert_eq!(frontend.current_version().await.unwrap(), Some(first));
        let info = frontend.version_info(first).await.unwrap();
        assert_eq!((info.users, info.items, info.snapshot), (4, 311, 0xfeed));

        let storage = RedisFeedStorage::new(feeds.clone(), Arc::clone(&frontend), breaker(), first);
        assert_eq!(take(&storage, 1, 4).await.unwrap(), [100, 101, 102, 103]);
        assert_eq!(take(&storage, 1, 0).await.unwrap(), Vec::<u32>::new());
        let mut out = Vec::new();
        let taken = storage
            .take_next(UserId::new(1), 5, &mut out)
            .await
            .unwrap();
        assert_eq!((taken.count, taken.remaining), (5, 1));
        assert_eq!(take(&storage, 1, 5).await.unwrap(), [109]);
        assert_eq!(take(&storage, 1, 5).await.unwrap(), Vec::<u32>::new());
        assert_eq!(take(&storage, 2, 10).await.unwrap(), [7]);
        // An empty feed is a feed: nothing personal, but no unknown user.
        assert_eq!(take(&storage, 4, 10).await.unwrap(), Vec::<u32>::new());
        assert!(matches!(
            take(&storage, 3, 10).await,
            Err(StorageError::UnknownUser(_))
        ));

        // A counter someone else wrote is refused, never read as progress:
        // negative, or no number at all (the node says so). Nothing is
        // handed out, and the breaker does not count it as a node failure.
        let mut raw = frontend.connection().await.unwrap();
        for (value, wanted) in [("-50", "offset -40"), ("abc", "not an integer")] {
            let _: () = redis::cmd("SET")
                .arg(keys::offset(4, first))
                .arg(value)
                .query_async(&mut raw)
                .await
                .unwrap();
            let error = take(&storage, 4, 10).await.unwrap_err();
            assert!(
                error.to_string().contains(wanted)
                    || format!("{:?}", cause(&error)).contains(wanted),
                "{error}: {:?}",
                cause(&error)
            );
            assert!(!cause(&error).unwrap().is_node_failure());
        }
        assert_eq!(storage.breaker().times_opened(), 0);
        let _: () = redis::cmd("SET")
            .arg(keys::offset(4, first))
            .arg(10)
            .query_async(&mut raw)
            .await
            .unwrap();

        // Two frontends (separate connections), 40 concurrent requests for
        // one user: every item once, none twice.
        let other = Arc::new(
            Cluster::connect(&settings(&cluster, GENEROUS))
                .await
                .unwrap(),
        );
        let stores = [
            storage.clone(),
            RedisFeedStorage::new(feeds.clone(), other, breaker(), first),
        ];
        let calls = (0..40).map(|i| {
            let store = stores[i % 2].clone();
            async move { take(&store, sparse, 1 + i % 9).await.unwrap() }
        });
        let mut handed = Vec::new();
        for items in join_all(calls).await {
            handed.extend(items);
        }
        let distinct: HashSet<_> = handed.iter().copied().collect();
        assert_eq!(distinct.len(), handed.len(), "an item was handed out twice");
        assert_eq!(
            handed.len(),
            (0..40).map(|i| 1 + i % 9).sum::<usize>().min(300)
        );
    });

    // A second version starts everyone from 0; the first keeps its progress
    // for a rollback; a third deletes the first.
    let second = publish(&mut loader, &[], 0xfeed);
    runtime().block_on(async {
        let frontend = Arc::new(
            Cluster::connect(&settings(&cluster, GENEROUS))
                .await
                .unwrap(),
        );
        assert_eq!(frontend.current_version().await.unwrap(), Some(second));
        let storage =
            RedisFeedStorage::new(feeds.clone(), Arc::clone(&frontend), breaker(), second);
        assert_eq!(take(&storage, 2, 10).await.unwrap(), [7]);
    });
    assert_eq!(loader.rollback().unwrap(), Some((second, first)));
    assert_eq!(loader.versions().unwrap(), (Some(first), Some(second)));
    runtime().block_on(async {
        let frontend = Arc::new(
            Cluster::connect(&settings(&cluster, GENEROUS))
                .await
                .unwrap(),
        );
        let storage = RedisFeedStorage::new(feeds.clone(), frontend, breaker(), first);
        assert_eq!(
            take(&storage, 1, 5).await.unwrap(),
            Vec::<u32>::new(),
            "progress kept"
        );
    });
    assert_eq!(loader.rollback().unwrap(), Some((first, second)));
    let third = publish(&mut loader, &[], 0xfeed);
    let published = loader.versions().unwrap();
    assert_eq!(published, (Some(third), Some(second)));
    // Users 1, 2, 4 and the sparse user have offsets in `first` (user 3,
    // unknown, never reached the cluster), plus its description.
    assert_eq!(loader.delete_version(first).unwrap(), 5);
    assert_eq!(loader.delete_version(first).unwrap(), 0);
}

async fn keyed(
    storage: &RedisFeedStorage<Feeds>,
    user: u64,
    max: usize,
    key: &str,
) -> (Keyed, Vec<u32>) {
    let key = IdempotencyKey::parse(key.as_bytes()).unwrap();
    let mut out = Vec::new();
    let keyed = storage
        .take_keyed(UserId::new(user), max, key, &mut out)
        .await
        .unwrap();
    (keyed, out.into_iter().map(ItemId::get).collect())
}

/// A retry through another frontend gets the same page and moves nothing;
/// the same key with another size moves nothing; a counter of the layout
/// before retry keys keeps its progress.
#[test]
fn a_retry_through_another_frontend_gets_the_same_page() {
    let Some(cluster) = TestCluster::start(3, 0) else {
        return;
    };
    let list = vec![
        (1, (100..120).collect::<Vec<u32>>()),
        (2, (1..=5).collect()),
    ];
    let mut loader = Loader::connect(&settings(&cluster, GENEROUS)).unwrap();
    let version = publish(&mut loader, &list, 0xfeed);
    let feeds = feeds(&list);
    runtime().block_on(async {
        let a = Arc::new(
            Cluster::connect(&settings(&cluster, GENEROUS))
                .await
                .unwrap(),
        );
        let b = Arc::new(
            Cluster::connect(&settings(&cluster, GENEROUS))
                .await
                .unwrap(),
        );
        let a = RedisFeedStorage::new(feeds.clone(), a, breaker(), version);
        let b = RedisFeedStorage::new(feeds.clone(), Arc::clone(&b), breaker(), version);
        let (first, items) = keyed(&a, 1, 4, "k-1").await;
        assert!(matches!(first, Keyed::Fresh { start: 0, .. }), "{first:?}");
        assert_eq!(items, [100, 101, 102, 103]);
        let (again, items) = keyed(&b, 1, 4, "k-1").await;
        assert!(
            matches!(again, Keyed::Replayed { start: 0, .. }),
            "{again:?}"
        );
        assert_eq!(items, [100, 101, 102, 103]);
        let (other, items) = keyed(&b, 1, 5, "k-1").await;
        assert_eq!(other, Keyed::OtherSize { first: 4 });
        assert!(items.is_empty());
        // Without a key, and with a new one, the feed goes on.
        assert_eq!(take(&b, 1, 2).await.unwrap(), [104, 105]);
        let (next, items) = keyed(&a, 1, 3, "k-2").await;
        assert!(matches!(next, Keyed::Fresh { start: 6, .. }), "{next:?}");
        assert_eq!(items, [106, 107, 108]);
        // The old key is no longer the latest: a new page.
        let (old, items) = keyed(&a, 1, 4, "k-1").await;
        assert!(matches!(old, Keyed::Fresh { start: 9, .. }), "{old:?}");
        assert_eq!(items, [109, 110, 111, 112]);

        // Past the end: an empty page, replayed as empty.
        let (end, items) = keyed(&a, 2, 10, "k-3").await;
        assert!(matches!(end, Keyed::Fresh { start: 0, .. }));
        assert_eq!(items, [1, 2, 3, 4, 5]);
        let (empty, items) = keyed(&a, 2, 10, "k-4").await;
        assert!(matches!(empty, Keyed::Fresh { start: 10, .. }), "{empty:?}");
        assert!(items.is_empty());
        assert!(matches!(
            keyed(&b, 2, 10, "k-4").await.0,
            Keyed::Replayed { start: 10, .. }
        ));

        // A plain counter, as the layout before retry keys left it: kept.
        let mut connection = Cluster::connect(&settings(&cluster, GENEROUS))
            .await
            .unwrap()
            .connection()
            .await
            .unwrap();
        let key = keys::offset(1, version);
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(15)
            .query_async(&mut connection)
            .await
            .unwrap();
        let (upgraded, items) = keyed(&a, 1, 2, "k-5").await;
        assert!(
            matches!(upgraded, Keyed::Fresh { start: 15, .. }),
            "{upgraded:?}"
        );
        assert_eq!(items, [115, 116]);
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(18)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(take(&b, 1, 1).await.unwrap(), [118]);
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(kind, "hash");
    });
}

#[test]
fn a_dead_master_fails_fast_then_its_replica_serves_with_progress_intact() {
    let Some(mut cluster) = TestCluster::start(3, 1) else {
        return;
    };
    let users: Vec<(u64, Vec<u32>)> = (0..200).map(|u| (u, (1..=50).collect())).collect();
    let mut loader = Loader::connect(&settings(&cluster, GENEROUS)).unwrap();
    let version = publish(&mut loader, &users, 1);
    let feeds = feeds(&users);
    let victim = 17u64;
    let dead_master = cluster.master_of(keys::slot(victim));
    runtime().block_on(async {
        // The progress before the kill is written without the tight limit
        // (a call that timed out might still have moved it), and waited
        // for on the replica.
        let setup = Arc::new(Cluster::connect(&settings(&cluster, GENEROUS)).await.unwrap());
        let writer = RedisFeedStorage::new(feeds.clone(), Arc::clone(&setup), breaker(), version);
        assert_eq!(take(&writer, victim, 3).await.unwrap(), [1, 2, 3]);
        wait_replicated(&setup).await;
        let frontend = Arc::new(Cluster::connect(&settings(&cluster, TIMEOUT)).await.unwrap());
        let storage = RedisFeedStorage::new(feeds, frontend, breaker(), version);

        cluster.kill(dead_master);
        let killed = Instant::now();
        let mut slowest = Duration::ZERO;
        let mut failures = 0;
        let mut uncertain = 0;
        let mut recovered = None;
        while killed.elapsed() < Duration::from_secs(30) {
            let started = Instant::now();
            let answer = take(&storage, victim, 1).await;
            slowest = slowest.max(started.elapsed());
            match answer {
                Ok(items) => {
                    recovered = Some((killed.elapsed(), items));
                    break;
                }
                Err(error @ StorageError::Backend(_)) => {
                    failures += 1;
                    if may_have_run(&error) {
                        uncertain += 1;
                    }
                }
                Err(other) => panic!("unexpected {other}"),
            }
            // A pause between polls, not a guess at when the failover ends.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (after, items) = recovered.expect("the replica took over within 30 s");
        eprintln!(
            "degraded for {after:?}, {failures} failed calls ({uncertain} may have run), slowest {slowest:?}"
        );
        assert!(failures > 0, "the kill was noticed");
        assert!(
            slowest <= TIMEOUT + SLACK,
            "a call waited {slowest:?}, beyond the {TIMEOUT:?} limit"
        );
        // Progress continued where it stopped: item 4, or one item later
        // for each failed call that may have run on the new master (its
        // answer lost, not its step). Never from the start again.
        assert_eq!(items.len(), 1);
        assert!(
            (4..=4 + uncertain).contains(&items[0]),
            "item {} after {uncertain} calls that may have run: progress was lost",
            items[0]
        );
        assert!(storage.breaker().times_opened() >= 1);

        // The whole cluster down: every call fails within the limit, and
        // once the breaker opens, it refuses calls without making them.
        cluster.kill_all();
        let mut refused = 0;
        for _ in 0..20 {
            let started = Instant::now();
            let error = take(&storage, victim, 1).await.unwrap_err();
            let took = started.elapsed();
            assert!(took <= TIMEOUT + SLACK, "waited {took:?}");
            if matches!(cause(&error), Some(RedisStoreError::BreakerOpen)) {
                refused += 1;
            }
        }
        assert!(refused > 0, "the breaker never opened");
    });
}

/// A worker thread whose first calls meet a cluster that accepts
/// connections and never answers: its connection cannot be made, and every
/// call, those waiting for another call's connecting included, gives up at
/// its own time limit.
#[test]
fn a_threads_first_calls_to_a_hung_cluster_keep_their_time_limit() {
    let Some(cluster) = TestCluster::start(3, 0) else {
        return;
    };
    let users: Vec<(u64, Vec<u32>)> = (0..20).map(|u| (u, (1..=50).collect())).collect();
    let mut loader = Loader::connect(&settings(&cluster, GENEROUS)).unwrap();
    let version = publish(&mut loader, &users, 1);
    let frontend = runtime().block_on(Cluster::connect(&settings(&cluster, TIMEOUT)));
    let storage = RedisFeedStorage::new(
        feeds(&users),
        Arc::new(frontend.unwrap()),
        breaker(),
        version,
    );
    cluster.freeze_all();
    std::thread::spawn(move || {
        runtime().block_on(async {
            let calls = (0..10).map(|user| {
                let storage = &storage;
                async move {
                    let started = Instant::now();
                    let answer = take(storage, user, 1).await;
                    (started.elapsed(), answer)
                }
            });
            for (took, answer) in join_all(calls).await {
                assert!(answer.is_err(), "a frozen cluster answered: {answer:?}");
                assert!(took <= TIMEOUT + SLACK, "waited {took:?}");
            }
        });
    })
    .join()
    .unwrap();
}

/// Runs `futures` concurrently on this task.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

/// Over TLS only (clients, cluster bus, replication) with a password: a
/// version is written, published, read and deleted through `rediss://`,
/// trusting the test's authority; a client that does not trust it gets
/// nothing.
#[test]
fn a_tls_cluster_serves_clients_that_trust_its_authority() {
    let Some(cluster) = TestCluster::start_tls(3, 0) else {
        return;
    };
    let mut untrusting = settings(&cluster, GENEROUS);
    untrusting.ca_pem = None;
    assert!(Loader::connect(&untrusting).is_err());

    let feeds = vec![(1, (100..110).collect::<Vec<u32>>()), (2, vec![7])];
    let mut loader = Loader::connect(&settings(&cluster, GENEROUS)).unwrap();
    let first = publish(&mut loader, &feeds, 1);
    let feeds = self::feeds(&feeds);
    runtime().block_on(async {
        let frontend = Arc::new(
            Cluster::connect(&settings(&cluster, GENEROUS))
                .await
                .unwrap(),
        );
        assert_eq!(frontend.current_version().await.unwrap(), Some(first));
        let storage = RedisFeedStorage::new(feeds, Arc::clone(&frontend), breaker(), first);
        assert_eq!(take(&storage, 1, 4).await.unwrap(), [100, 101, 102, 103]);
        assert_eq!(take(&storage, 2, 10).await.unwrap(), [7]);
    });
    // A second version drops none yet; deleting the first reaches every
    // master over TLS (one connection per master).
    let second = publish(&mut loader, &[], 1);
    assert_ne!(first, second);
    assert!(loader.delete_version(first).unwrap() > 0);
}

/// What a version gave is passed over in the next one, and in the one
/// before after a rollback; a frontend that has not switched moves
/// nothing; the marks come from a frontend that maps the previous
/// snapshot, in a second call when none were written ahead.
#[test]
fn no_item_is_handed_out_twice_across_versions_and_a_rollback() {
    let Some(cluster) = TestCluster::start(3, 0) else {
        return;
    };
    let mut v2_feed: Vec<u32> = (5020..=5040).collect();
    v2_feed.extend(6001..=6010);
    v2_feed.extend(5001..=5010);
    let v1_list = vec![
        (7, (5001..=5060).collect::<Vec<u32>>()),
        (8, (1..=20).collect()),
        (9, (100..=110).collect()),
        (10, (1000..=1019).collect()),
    ];
    let v2_list = vec![
        (7, v2_feed),
        (8, (1..=20).rev().collect()),
        (9, (100..=110).collect()),
        (10, (1000..=1019).rev().collect()),
    ];
    let (v1, v2) = (feeds(&v1_list), feeds(&v2_list));
    let mut loader = Loader::connect(&settings(&cluster, GENEROUS)).unwrap();
    let first = publish(&mut loader, &v1_list, 1);
    let before = |version, feeds: Option<&Feeds>, epoch| {
        Arc::new(ArcSwapOption::from_pointee(Before::new(
            version,
            epoch,
            feeds.map(|f| Arc::new(f.clone()) as Arc<dyn RankedFeeds>),
        )))
    };
    let sealed = |result: Result<Vec<u32>, StorageError>| {
        let error = result.unwrap_err();
        assert!(
            matches!(cause(&error), Some(RedisStoreError::Sealed(_))),
            "{error}"
        );
    };
    runtime().block_on(async {
        let frontend = Arc::new(
            Cluster::connect(&settings(&cluster, GENEROUS))
                .await
                .unwrap(),
        );
        let old = RedisFeedStorage::new(v1.clone(), Arc::clone(&frontend), breaker(), first);
        assert_eq!(
            take(&old, 7, 30).await.unwrap(),
            (5001..=5030).collect::<Vec<_>>()
        );
        assert_eq!(take(&old, 8, 5).await.unwrap(), [1, 2, 3, 4, 5]);
        assert_eq!(take(&old, 9, 3).await.unwrap(), [100, 101, 102]);

        let second = publish(&mut loader, &v2_list, 2);
        let pointers = frontend.pointers().await.unwrap();
        assert_eq!(
            (pointers.current, pointers.previous),
            (Some(second), Some(first))
        );
        let carried = before(first, Some(&v1), pointers.epoch);
        let new = RedisFeedStorage::new(v2.clone(), Arc::clone(&frontend), breaker(), second)
            .carry_from(Arc::clone(&carried));
        // Users 7, 8, 9 and 10 are at positions 0 to 3.
        let clear = |position| carried.load().as_ref().unwrap().is_clear(position);
        // The example: 5020-5030 and 5001-5010 were given.
        assert_eq!(
            take(&new, 7, 10).await.unwrap(),
            (5031..=5040).collect::<Vec<_>>()
        );
        assert_eq!(
            take(&new, 7, 10).await.unwrap(),
            (6001..=6010).collect::<Vec<_>>()
        );
        assert!(!clear(0), "5001-5010 are marked ahead");
        assert_eq!(take(&new, 7, 10).await.unwrap(), Vec::<u32>::new());
        assert!(clear(0), "walked to the end");
        // A frontend still on the first version moves nothing of user 7's.
        sealed(take(&old, 7, 10).await);
        // User 8 moves there before their first request to the second:
        // all they were given is passed over.
        assert_eq!(take(&old, 8, 5).await.unwrap(), [6, 7, 8, 9, 10]);
        let (page, items) = keyed(&new, 8, 4, "a").await;
        assert!(matches!(page, Keyed::Fresh { start: 0, .. }), "{page:?}");
        assert_eq!(items, [20, 19, 18, 17]);
        let (page, again) = keyed(&new, 8, 4, "a").await;
        assert!(matches!(page, Keyed::Replayed { start: 0, .. }), "{page:?}");
        assert_eq!(again, items);
        assert_eq!(take(&new, 8, 10).await.unwrap(), [16, 15, 14, 13, 12, 11]);
        // A frontend without the first snapshot cannot make user 9's marks.
        let unmapped = RedisFeedStorage::new(v2.clone(), Arc::clone(&frontend), breaker(), second)
            .carry_from(before(first, None, pointers.epoch));
        let error = take(&unmapped, 9, 3).await.unwrap_err();
        assert!(
            matches!(cause(&error), Some(RedisStoreError::NotMapped(v)) if *v == first),
            "{error}"
        );
        assert_eq!(take(&new, 9, 3).await.unwrap(), [103, 104, 105]);
        // Now written, the marks serve the frontend without the snapshot too.
        assert_eq!(take(&unmapped, 9, 3).await.unwrap(), [106, 107, 108]);
        assert_eq!(take(&new, 10, 3).await.unwrap(), [1019, 1018, 1017]);
        // Nothing marked: from now on the plain HINCRBY.
        assert!(clear(3));
        assert_eq!(take(&new, 10, 2).await.unwrap(), [1016, 1015]);

        // A rollback: the first version carries what the second gave.
        assert_eq!(loader.rollback().unwrap(), Some((second, first)));
        let pointers = frontend.pointers().await.unwrap();
        let back = RedisFeedStorage::new(v1.clone(), Arc::clone(&frontend), breaker(), first)
            .carry_from(before(second, Some(&v2), pointers.epoch));
        assert_eq!(
            take(&back, 7, 10).await.unwrap(),
            (5041..=5050).collect::<Vec<_>>()
        );
        // The second version, on a frontend that has not switched back.
        sealed(take(&new, 7, 1).await);
        // User 8 was given 1-10 under the first and 20-11 under the second.
        assert_eq!(take(&back, 8, 10).await.unwrap(), Vec::<u32>::new());
        assert_eq!(take(&back, 9, 5).await.unwrap(), [109, 110]);
        assert_eq!(take(&back, 10, 3).await.unwrap(), [1000, 1001, 1002]);
        // A frontend that never learned of the second version nor of the
        // rollback (plain HINCRBY) does not move the key served again.
        sealed(take(&old, 10, 1).await);

        // Forward again: the second version, settled at its first switch,
        // carries what the first gave since.
        assert_eq!(loader.rollback().unwrap(), Some((first, second)));
        let pointers = frontend.pointers().await.unwrap();
        let again = RedisFeedStorage::new(v2.clone(), Arc::clone(&frontend), breaker(), second)
            .carry_from(before(first, Some(&v1), pointers.epoch));
        assert_eq!(
            take(&again, 10, 20).await.unwrap(),
            (1003..=1014).rev().collect::<Vec<_>>()
        );
        sealed(take(&back, 10, 1).await);
        // Nor does the frontend still at the first switch, though it had
        // user 10 settled with nothing marked ahead (the plain HINCRBY).
        assert!(clear(3));
        sealed(take(&new, 10, 1).await);
        assert_eq!(take(&again, 10, 20).await.unwrap(), Vec::<u32>::new());
    });
}

/// Marks written ahead of a publish serve a user's first request in the
/// new version in one call, even on a frontend that does not map the
/// previous snapshot; a user who moved after their offset was read needs
/// the second call, which only a frontend that maps it can make.
#[test]
fn marks_written_ahead_serve_a_first_request_in_one_call() {
    let Some(cluster) = TestCluster::start(3, 0) else {
        return;
    };
    let old_feed: Vec<u32> = (1..=10).collect();
    let new_feed: Vec<u32> = (1..=10).rev().collect();
    let v1_list = vec![(5, old_feed.clone()), (6, old_feed.clone())];
    let v2_list = vec![(5, new_feed.clone()), (6, new_feed.clone())];
    let (v1, v2) = (feeds(&v1_list), feeds(&v2_list));
    let mut loader = Loader::connect(&settings(&cluster, GENEROUS)).unwrap();
    let first = publish(&mut loader, &v1_list, 1);
    runtime().block_on(async {
        let frontend = Arc::new(
            Cluster::connect(&settings(&cluster, GENEROUS))
                .await
                .unwrap(),
        );
        let old = RedisFeedStorage::new(v1.clone(), Arc::clone(&frontend), breaker(), first);
        assert_eq!(take(&old, 5, 4).await.unwrap(), [1, 2, 3, 4]);
        assert_eq!(take(&old, 6, 2).await.unwrap(), [1, 2]);

        let second = loader.new_version().unwrap();
        let ahead = carry::write_ahead(
            &settings(&cluster, GENEROUS),
            (first, second),
            |user, given| {
                let given = &old_feed[..given as usize];
                (user == 5 || user == 6).then(|| carry::marks(given, &new_feed))
            },
        )
        .unwrap();
        assert_eq!(
            ahead,
            carry::Ahead {
                from: first,
                users: 2,
                marked: 6
            }
        );
        // User 6 moves after their offset was read.
        assert_eq!(take(&old, 6, 3).await.unwrap(), [3, 4, 5]);
        loader
            .publish(&VersionInfo {
                version: second,
                users: 2,
                items: 20,
                created_unix_ms: 1,
                snapshot: 2,
            })
            .unwrap();
        let epoch = frontend.pointers().await.unwrap().epoch;
        let unmapped = RedisFeedStorage::new(v2.clone(), Arc::clone(&frontend), breaker(), second)
            .carry_from(Arc::new(ArcSwapOption::from_pointee(Before::new(
                first, epoch, None,
            ))));
        assert_eq!(take(&unmapped, 5, 3).await.unwrap(), [10, 9, 8]);
        let error = take(&unmapped, 6, 3).await.unwrap_err();
        assert!(
            matches!(cause(&error), Some(RedisStoreError::NotMapped(_))),
            "{error}"
        );
        let mapped = RedisFeedStorage::new(v2.clone(), Arc::clone(&frontend), breaker(), second)
            .carry_from(Arc::new(ArcSwapOption::from_pointee(Before::new(
                first,
                epoch,
                Some(Arc::new(v1.clone()) as Arc<dyn RankedFeeds>),
            ))));
        assert_eq!(take(&mapped, 6, 10).await.unwrap(), [10, 9, 8, 7, 6]);
        // Left behind (the first version no longer kept), a frontend
        // still walks the marks in the second version's keys.
        let behind = RedisFeedStorage::new(v2.clone(), Arc::clone(&frontend), breaker(), second)
            .carry_from(Arc::new(ArcSwapOption::from_pointee(
                Before::new(first, epoch, None).gone(),
            )));
        assert_eq!(take(&behind, 5, 10).await.unwrap(), [7, 6, 5]);
    });
}
