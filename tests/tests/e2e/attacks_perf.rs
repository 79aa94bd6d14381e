//! Outside-attacker probes of the promises touched by performance work: the gateway's
//! verified-token memory, single-flight data keys with crypto-erasure on delete, and member
//! removal under concurrent load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::member_service_client::MemberServiceClient;
use ts_proto::public::*;
use ts_testkit::{TestCluster, as_gateway, query_content};

fn raw_auth<T>(header: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("authorization", header.parse().expect("ascii header"));
    r
}

/// The cluster's gateway and a second replica of it (serving while the sender lives).
async fn two_gateways(cluster: &TestCluster) -> anyhow::Result<([Channel; 2], tokio::sync::watch::Sender<bool>)> {
    let (second, stop) = cluster.extra_gateway().await?;
    Ok(([cluster.gateway().await?, cluster.gateway_at(second).await?], stop))
}

async fn me_raw(ch: &Channel, header: &str) -> Result<String, tonic::Status> {
    AuthServiceClient::new(ch.clone())
        .get_me(raw_auth(header, GetMeRequest {}))
        .await
        .map(|r| r.into_inner().user.map(|u| u.email).unwrap_or_default())
}

async fn me(ch: &Channel, token: &str) -> Result<String, tonic::Status> {
    me_raw(ch, &format!("Bearer {token}")).await
}

fn spellings(token: &str) -> Vec<String> {
    vec![
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER {token}"),
        format!("Bearer  {token}"),
        format!("Bearer {token} "),
        format!("Bearer {token}\t"),
        format!("Bearer\t{token}"),
        format!(" Bearer {token}"),
        format!("Bearer {token}."),
        format!("Bearer {token}="),
        token.to_owned(),
    ]
}

/// Many concurrent GetMe calls with `header` on each channel; the ones that were accepted.
async fn concurrent_me(channels: &[Channel], header: &str, per_channel: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for ch in channels {
        for _ in 0..per_channel {
            let (ch, header) = (ch.clone(), header.to_owned());
            tasks.push(tokio::spawn(async move { me_raw(&ch, &header).await }));
        }
    }
    let mut accepted = Vec::new();
    for t in tasks {
        if let Ok(email) = t.await.expect("join") {
            accepted.push(email);
        }
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_cached_token_after_expiry_on_two_gateways() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let (gws, _stop) = two_gateways(&cluster).await?;
    let s = cluster.sign_in("exp@example.com").await?;
    // Warm both gateways' memories with every spelling that is accepted.
    let mut accepted_spellings = Vec::new();
    for sp in spellings(&s.access) {
        let ok = me_raw(&gws[0], &sp).await.is_ok();
        let ok2 = me_raw(&gws[1], &sp).await.is_ok();
        assert_eq!(ok, ok2, "gateways disagree on {sp:?}");
        if ok {
            accepted_spellings.push(sp);
        }
    }
    eprintln!(
        "accepted spellings: {:?}",
        accepted_spellings.iter().map(|x| x.replace(&s.access, "<T>")).collect::<Vec<_>>()
    );
    assert_eq!(concurrent_me(&gws, &format!("Bearer {}", s.access), 20).await.len(), 40);

    // Just before expiry: still fine; then one second past it: refused everywhere, at once.
    cluster.clock.advance(Duration::from_secs(15 * 60 - 5));
    let _ = me(&gws[0], &s.access).await; // warm again near the edge
    let _ = me(&gws[1], &s.access).await;
    cluster.clock.advance(Duration::from_secs(6));
    for sp in spellings(&s.access) {
        let acc = concurrent_me(&gws, &sp, 16).await;
        assert!(acc.is_empty(), "expired token accepted with {:?}: {} times", sp.replace(&s.access, "<T>"), acc.len());
    }
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_cached_token_after_sign_out_on_two_gateways_under_load() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let (gws, _stop) = two_gateways(&cluster).await?;
    let s = cluster.sign_in("out@example.com").await?;
    for sp in spellings(&s.access) {
        let _ = me_raw(&gws[0], &sp).await;
        let _ = me_raw(&gws[1], &sp).await;
    }
    assert_eq!(concurrent_me(&gws, &format!("Bearer {}", s.access), 20).await.len(), 40);

    // Hammer both gateways while signing out; record calls that started after the ack.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let mut hammers = Vec::new();
    for i in 0..32 {
        let ch = gws[i % 2].clone();
        let (tok, done, acked) = (s.access.clone(), done.clone(), acked.clone());
        hammers.push(tokio::spawn(async move {
            let mut bad = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let started = Instant::now();
                let r = me(&ch, &tok).await;
                let ack = *acked.lock().unwrap();
                if let (Ok(_), Some(ack)) = (&r, ack)
                    && started > ack
                {
                    bad.push(format!(
                        "gateway {} accepted a call started {:?} after sign-out ack",
                        i % 2,
                        started - ack
                    ));
                }
            }
            bad
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    AuthServiceClient::new(gws[0].clone()).sign_out(s.request(SignOutRequest {})).await?;
    *acked.lock().unwrap() = Some(Instant::now());
    // Immediately: every spelling, every gateway, many at once.
    let mut immediate = Vec::new();
    for sp in spellings(&s.access) {
        let acc = concurrent_me(&gws, &sp, 8).await;
        if !acc.is_empty() {
            immediate.push(format!("{:?} accepted {} times", sp.replace(&s.access, "<T>"), acc.len()));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut bad = Vec::new();
    for h in hammers {
        bad.extend(h.await?);
    }
    assert!(immediate.is_empty(), "after sign-out: {immediate:?}");
    assert!(bad.is_empty(), "{} late acceptances, first: {:?}", bad.len(), bad.first());
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_mutated_token_after_successful_use() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let gw = cluster.gateway().await?;
    let s = cluster.sign_in("mut@example.com").await?;
    let victim = cluster.sign_in("victim@example.com").await?;
    assert_eq!(me(&gw, &s.access).await?, "mut@example.com");
    assert_eq!(me(&gw, &victim.access).await?, "victim@example.com");
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let tok = s.access.as_bytes().to_vec();
    let mut accepted = Vec::new();
    let mut tasks = Vec::new();
    for pos in 0..tok.len() {
        if tok[pos] == b'.' {
            continue;
        }
        // Two replacements per position: the neighbour in the alphabet (often only padding bits
        // differ at the last char) and one far away.
        let idx = alphabet.iter().position(|c| *c == tok[pos]).expect("base64url");
        for delta in [1usize, 32] {
            let mut t = tok.clone();
            t[pos] = alphabet[(idx ^ delta) % 64];
            let t = String::from_utf8(t)?;
            let gw = gw.clone();
            tasks.push(tokio::spawn(async move { (pos, delta, me(&gw, &t).await) }));
        }
    }
    for t in tasks {
        let (pos, delta, r) = t.await?;
        if let Ok(email) = r {
            accepted.push((pos, delta, email));
        }
    }
    // Splice: victim's header+payload with attacker's signature, and the reverse.
    let (a, v): (Vec<&str>, Vec<&str>) = (s.access.split('.').collect(), victim.access.split('.').collect());
    let spliced = format!("{}.{}.{}", v[0], v[1], a[2]);
    assert!(me(&gw, &spliced).await.is_err(), "spliced token accepted");
    let len = s.access.len();
    assert!(me(&gw, &s.access[..len - 1]).await.is_err(), "truncated token accepted");
    assert!(accepted.is_empty(), "mutated tokens accepted (pos of {len}, delta, email): {accepted:?}");
    assert_eq!(me(&gw, &s.access).await?, "mut@example.com");
    cluster.stop().await
}

fn item_req(folder_id: &str, name: &str) -> CreateItemRequest {
    CreateItemRequest {
        folder_id: folder_id.into(),
        name: name.into(),
        description: "secret-desc".into(),
        content: Some(query_content(r#"{"secret": 42}"#)),
        ..Default::default()
    }
}

#[derive(Default)]
struct Tally {
    ok_after_ack: Vec<String>,
    ok_straddling: usize,
    ok_before: usize,
    err_codes: std::collections::BTreeMap<String, usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_delete_folder_races_concurrent_reads() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let replica = cluster.folders_replica().await?;
    let (gws, _stop) = two_gateways(&cluster).await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    let mut total = Tally::default();
    for round in 0..4 {
        let folder_id = cluster.folders(&alice).await?.create(&format!("Doomed {round}")).await?;
        cluster.add_member(&folder_id, &bob, AccessLevel::View).await?;
        let mut items = ItemServiceClient::new(gws[0].clone());
        let mut ids = Vec::new();
        for n in 0..4 {
            let r = items.create_item(alice.request(item_req(&folder_id, &format!("i{n}")))).await?.into_inner();
            ids.push(r.item.and_then(|i| i.summary).expect("summary").id);
        }
        // Round 0,2: warm reads first; round 1,3: delete against a cold key (no reads before).
        let warm = round % 2 == 0;
        if warm {
            for id in &ids {
                items
                    .get_item(bob.request(GetItemRequest { folder_id: folder_id.clone(), item_id: id.clone() }))
                    .await?;
            }
        }
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
        let go = Arc::new(tokio::sync::Barrier::new(49));
        let mut readers = Vec::new();
        for i in 0..48usize {
            let (done, acked, go) = (done.clone(), acked.clone(), go.clone());
            let (fid, ids) = (folder_id.clone(), ids.clone());
            let user = if i % 3 == 0 { alice.clone() } else { bob.clone() };
            let gw = gws[i % 2].clone();
            let rep = replica.channel.clone();
            readers.push(tokio::spawn(async move {
                let mut t = Tally::default();
                go.wait().await;
                let mut n = 0usize;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let started = Instant::now();
                    let id = ids[(i + n) % ids.len()].clone();
                    let kind = (i + n) % 4;
                    let r: Result<String, tonic::Status> = match kind {
                        0 | 1 => {
                            let mut c = ItemServiceClient::new(if kind == 0 { gw.clone() } else { rep.clone() });
                            let req = GetItemRequest { folder_id: fid.clone(), item_id: id };
                            let req = if kind == 0 { user.request(req) } else { as_gateway(&user, req) };
                            c.get_item(req).await.map(|r| format!("{:?}", r.into_inner().item.and_then(|i| i.content)))
                        }
                        _ => {
                            let mut c = ItemServiceClient::new(if kind == 2 { gw.clone() } else { rep.clone() });
                            let req = ListItemsRequest { folder_id: fid.clone(), page: None };
                            let req = if kind == 2 { user.request(req) } else { as_gateway(&user, req) };
                            c.list_items(req).await.map(|r| format!("{} items", r.into_inner().items.len()))
                        }
                    };
                    let finished = Instant::now();
                    let ack = *acked.lock().unwrap();
                    match r {
                        Ok(v) => match ack {
                            Some(a) if started > a => t.ok_after_ack.push(format!("kind {kind}: {v}")),
                            Some(a) if finished > a => t.ok_straddling += 1,
                            _ => t.ok_before += 1,
                        },
                        Err(e) => *t.err_codes.entry(format!("{:?}", e.code())).or_default() += 1,
                    }
                }
                t
            }));
        }
        go.wait().await;
        if !warm {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        FolderServiceClient::new(gws[0].clone())
            .delete_folder(alice.request(DeleteFolderRequest { folder_id: folder_id.clone() }))
            .await?;
        *acked.lock().unwrap() = Some(Instant::now());
        tokio::time::sleep(Duration::from_millis(400)).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        for r in readers {
            let t = r.await?;
            total.ok_after_ack.extend(t.ok_after_ack.into_iter().map(|s| format!("round {round}: {s}")));
            total.ok_straddling += t.ok_straddling;
            total.ok_before += t.ok_before;
            for (k, v) in t.err_codes {
                *total.err_codes.entry(k).or_default() += v;
            }
        }
        // Afterwards, every read fails everywhere.
        for id in &ids {
            for user in [&alice, &bob] {
                for gw in &gws {
                    let r = ItemServiceClient::new(gw.clone())
                        .get_item(user.request(GetItemRequest { folder_id: folder_id.clone(), item_id: id.clone() }))
                        .await;
                    assert!(r.is_err(), "round {round}: read after delete succeeded: {r:?}");
                }
                let r = ItemServiceClient::new(replica.channel.clone())
                    .get_item(as_gateway(user, GetItemRequest { folder_id: folder_id.clone(), item_id: id.clone() }))
                    .await;
                assert!(r.is_err(), "round {round}: replica read after delete succeeded: {r:?}");
            }
        }
        // And the clock moving (cached answers ageing) changes nothing.
        cluster.clock.advance(Duration::from_secs(61));
        let fresh = cluster.sign_in("alice@example.com").await?;
        let r = ItemServiceClient::new(replica.channel.clone())
            .get_item(as_gateway(&fresh, GetItemRequest { folder_id: folder_id.clone(), item_id: ids[0].clone() }))
            .await;
        assert!(r.is_err(), "round {round}: replica read after delete + clock succeeded: {r:?}");
    }
    eprintln!(
        "delete race: ok_before={} ok_straddling={} ok_after_ack={} errors={:?}",
        total.ok_before,
        total.ok_straddling,
        total.ok_after_ack.len(),
        total.err_codes
    );
    assert!(
        total.ok_after_ack.is_empty(),
        "{} reads started after DeleteFolder ack succeeded: {:?}",
        total.ok_after_ack.len(),
        &total.ok_after_ack[..total.ok_after_ack.len().min(5)]
    );
    drop(replica);
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_removed_member_under_concurrent_load() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let replica = cluster.folders_replica().await?;
    let (gws, _stop) = two_gateways(&cluster).await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    let mut late = Vec::new();
    let mut after = Vec::new();
    for round in 0..4 {
        let folder_id = cluster.folders(&alice).await?.create(&format!("Team {round}")).await?;
        let mut items = ItemServiceClient::new(gws[0].clone());
        let id = items
            .create_item(alice.request(item_req(&folder_id, "x")))
            .await?
            .into_inner()
            .item
            .and_then(|i| i.summary)
            .expect("summary")
            .id;
        cluster.add_member(&folder_id, &bob, AccessLevel::Edit).await?;
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
        let mut readers = Vec::new();
        for i in 0..32usize {
            let (done, acked) = (done.clone(), acked.clone());
            let (fid, id, bob) = (folder_id.clone(), id.clone(), bob.clone());
            let (gw, rep) = (gws[i % 2].clone(), replica.channel.clone());
            readers.push(tokio::spawn(async move {
                let mut bad = Vec::new();
                let mut n = 0usize;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let started = Instant::now();
                    let kind = (i + n) % 4;
                    let r = match kind {
                        0 => ItemServiceClient::new(gw.clone())
                            .get_item(bob.request(GetItemRequest { folder_id: fid.clone(), item_id: id.clone() }))
                            .await
                            .map(|_| ()),
                        1 => ItemServiceClient::new(rep.clone())
                            .get_item(as_gateway(&bob, GetItemRequest { folder_id: fid.clone(), item_id: id.clone() }))
                            .await
                            .map(|_| ()),
                        2 => ItemServiceClient::new(gw.clone())
                            .list_items(bob.request(ListItemsRequest { folder_id: fid.clone(), page: None }))
                            .await
                            .map(|_| ()),
                        _ => FolderServiceClient::new(gw.clone())
                            .get_folder(bob.request(GetFolderRequest { folder_id: fid.clone() }))
                            .await
                            .map(|_| ()),
                    };
                    let ack = *acked.lock().unwrap();
                    if let (Ok(()), Some(a)) = (r, ack)
                        && started > a
                    {
                        bad.push(format!("kind {kind} (gateway {})", i % 2));
                    }
                }
                bad
            }));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        MemberServiceClient::new(gws[round % 2].clone())
            .remove_member(
                alice.request(RemoveMemberRequest { folder_id: folder_id.clone(), user_id: bob.user_id.clone() }),
            )
            .await?;
        *acked.lock().unwrap() = Some(Instant::now());
        // The very next requests, concurrently, on every path.
        let mut next = Vec::new();
        for gw in gws.iter().chain(std::iter::once(&replica.channel)) {
            for _ in 0..8 {
                let (gw, fid, id, bob) = (gw.clone(), folder_id.clone(), id.clone(), bob.clone());
                let is_rep = next.len() >= 16;
                next.push(tokio::spawn(async move {
                    let req = GetItemRequest { folder_id: fid, item_id: id };
                    let req = if is_rep { as_gateway(&bob, req) } else { bob.request(req) };
                    ItemServiceClient::new(gw).get_item(req).await.map(|_| ())
                }));
            }
        }
        for t in next {
            if t.await?.is_ok() {
                after.push(format!("round {round}: immediate read after removal succeeded"));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        for r in readers {
            late.extend(r.await?.into_iter().map(|s| format!("round {round}: {s}")));
        }
        // Write attempts too.
        let w = ItemServiceClient::new(gws[1].clone()).create_item(bob.request(item_req(&folder_id, "sneak"))).await;
        assert!(w.is_err(), "round {round}: removed member wrote: {w:?}");
    }
    assert!(after.is_empty(), "{after:?}");
    assert!(
        late.is_empty(),
        "{} reads started after removal ack succeeded: {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );
    drop(replica);
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_cached_token_after_refresh_reuse_kills_session() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let (gws, _stop) = two_gateways(&cluster).await?;
    let s = cluster.sign_in("reuse@example.com").await?;
    let mut auth = AuthServiceClient::new(gws[1].clone());
    let rotated = auth
        .refresh_session(RefreshSessionRequest { refresh_token: s.refresh.clone() })
        .await?
        .into_inner()
        .tokens
        .expect("tokens");
    for tok in [&s.access, &rotated.access_token] {
        assert_eq!(concurrent_me(&gws, &format!("Bearer {tok}"), 10).await.len(), 20);
    }
    // Reuse of the old refresh token, once its retry window is over, kills the whole session.
    cluster.clock.advance(std::time::Duration::from_secs(11));
    assert!(auth.refresh_session(RefreshSessionRequest { refresh_token: s.refresh.clone() }).await.is_err());
    for tok in [&s.access, &rotated.access_token] {
        for sp in spellings(tok) {
            let acc = concurrent_me(&gws, &sp, 8).await;
            assert!(acc.is_empty(), "killed session token accepted with {:?}", sp.replace(tok.as_str(), "<T>"));
        }
    }
    cluster.stop().await
}
