//! The Rust SDK (`ts-client`) against the real stack: two users each keep their own
//! credentials for one shared connection, and every byte the SDK sends is captured to prove
//! that no credential ever leaves the user's machine; a create whose answer is lost is sent
//! again and makes one folder; an expired access token is refreshed once for many waiting
//! calls; errors come back typed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use http_body_util::BodyExt;
use teamshare::Service;
use ts_client::proto::{Connection, ItemKind, item_content};
use ts_client::{
    AccessLevel, Client, ClientConfig, ConnectionInput, EncryptedFileStore, ErrorReason, LocalCredentials,
    MemorySessionStore, SessionStore, Transport, TransportError,
};
use ts_testkit::TestCluster;

/// Everything a client sent: each request's path, headers and body bytes.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    paths: Vec<String>,
}

/// What the capturing transport does with one call.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// Send the first call whose path ends with this to the server, then drop its answer and
    /// report UNAVAILABLE, as a lost connection would.
    DropFirstAnswer(&'static str),
}

/// A transport over the cluster's gateway that records every request before sending it.
async fn capturing(cluster: &TestCluster, fault: Fault) -> anyhow::Result<(Transport, Arc<Mutex<Captured>>)> {
    let channel = cluster.gateway().await?;
    let seen = Arc::new(Mutex::new(Captured::default()));
    let dropped = Arc::new(Mutex::new(false));
    let log = seen.clone();
    let svc = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
        let (channel, log, dropped) = (channel.clone(), log.clone(), dropped.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map_err(|e| TransportError(Box::new(e)))?.to_bytes();
            let path = parts.uri.path().to_owned();
            {
                let mut log = log.lock().unwrap();
                log.paths.push(path.clone());
                for (name, value) in &parts.headers {
                    log.bytes.extend_from_slice(name.as_str().as_bytes());
                    log.bytes.extend_from_slice(value.as_bytes());
                }
                log.bytes.extend_from_slice(&body);
            }
            let req = http::Request::from_parts(parts, tonic::body::Body::new(http_body_util::Full::new(body)));
            let answer = tower::ServiceExt::oneshot(channel, req).await.map_err(|e| TransportError(Box::new(e)))?;
            if let Fault::DropFirstAnswer(suffix) = fault
                && path.ends_with(suffix)
                && !std::mem::replace(&mut *dropped.lock().unwrap(), true)
            {
                // The server did the work; the client never hears of it.
                let _ = answer.into_body().collect().await;
                return Ok(tonic::Status::unavailable("connection lost").into_http());
            }
            Ok(answer)
        }
    });
    Ok((Transport::new(svc), seen))
}

fn config(cluster: &TestCluster) -> ClientConfig {
    let mut c = ClientConfig::new(format!("https://{}", cluster.addr(Service::Gateway)));
    c.ca_pem = Some(std::fs::read(cluster.certs.ca_cert()).expect("ca"));
    c.tls_domain = Some("localhost".into());
    c.retry.initial_backoff = Duration::from_millis(20);
    c
}

/// A signed-in SDK client for `email` over a capturing transport, with its own credential file.
async fn user(
    cluster: &TestCluster,
    email: &str,
    dir: &std::path::Path,
    fault: Fault,
) -> anyhow::Result<(Client, Arc<Mutex<Captured>>, Arc<MemorySessionStore>)> {
    let (transport, seen) = capturing(cluster, fault).await?;
    let sessions = Arc::new(MemorySessionStore::default());
    let store = Arc::new(EncryptedFileStore::new(dir.join(format!("{email}.creds")), "local passphrase")?);
    let client = Client::with_transport(transport, config(cluster), sessions.clone()).with_credentials(store);
    client.start_email_sign_in(email).await?;
    let code = cluster.latest_code(email).expect("code");
    let me = client.complete_email_sign_in(email, &code).await?;
    assert_eq!(me.email, email);
    Ok((client, seen, sessions))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn two_users_share_a_connection_and_each_keeps_their_own_credentials_on_their_machine() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let dir = tempfile::tempdir()?;
    let (alice, alice_sent, _) = user(&cluster, "alice@example.com", dir.path(), Fault::None).await?;
    let (bob, bob_sent, _) = user(&cluster, "bob@example.com", dir.path(), Fault::None).await?;

    let folder = alice.create_folder("Team databases").await?;
    let typed = Connection {
        connection_string:
            "mongodb://alice:alice-Pa55word@db1.internal:27017/admin?tls=true&tlsCertificateKeyFilePassword=alice-key-pass"
                .into(),
        ssh_host: "bastion.internal:22".into(),
        ssh_username: "tunnel".into(),
        ..Default::default()
    };
    let mine = LocalCredentials { ssh_password: Some("alice-ssh-secret".into()), ..Default::default() };
    let shared = alice
        .share_connection(
            &folder.id,
            "Production",
            "read replicas",
            ConnectionInput { connection: typed, credentials: mine },
        )
        .await?;
    assert_eq!(shared.kept_locally, ["password", "key_passphrase", "ssh_password"]);
    let item_id = shared.item.summary.as_ref().expect("summary").id.clone();

    let invitation = alice.invite(&folder.id, "bob@example.com", AccessLevel::View).await?;
    let pending: Vec<_> = bob.my_invitations().try_collect().await?;
    assert_eq!(pending.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), [invitation.id.as_str()]);
    bob.accept_invitation(&invitation.id).await?;

    // Bob reads the shared connection: no secret of Alice's is in it.
    let seen_by_bob = bob.item(&folder.id, &item_id).await?;
    let text = format!("{seen_by_bob:?}");
    for secret in ["alice-Pa55word", "alice-key-pass", "alice-ssh-secret"] {
        assert!(!text.contains(secret), "{secret} reached Bob");
    }
    assert_eq!(seen_by_bob.summary.as_ref().map(|s| s.kind), Some(ItemKind::Connection as i32));

    // Each merges their own credentials into a ready URI.
    bob.set_credentials(
        &item_id,
        &LocalCredentials { username: Some("bob".into()), password: Some("bob-Pa55word".into()), ..Default::default() },
    )?;
    let alice_uri = alice.connection_uri(&folder.id, &item_id).await?;
    let bob_uri = bob.connection_uri(&folder.id, &item_id).await?;
    assert_eq!(
        alice_uri,
        "mongodb://alice:alice-Pa55word@db1.internal:27017/admin?tls=true&tlsCertificateKeyFilePassword=alice-key-pass"
    );
    assert_eq!(bob_uri, "mongodb://bob:bob-Pa55word@db1.internal:27017/admin?tls=true");
    assert_eq!(alice.credentials(&item_id)?.and_then(|c| c.ssh_password).as_deref(), Some("alice-ssh-secret"));

    // Removal: Bob's next read is refused with a typed reason.
    alice.remove_member(&folder.id, &bob.me().await?.id).await?;
    let refused = bob.item(&folder.id, &item_id).await.unwrap_err();
    assert!(refused.is(ErrorReason::FolderNotFound), "{refused:?}");
    // The last manager cannot leave: a reason to branch on, not a message to parse.
    let last = alice.api().leave_folder(ts_client::proto::LeaveFolderRequest { folder_id: folder.id.clone() }).await;
    assert!(last.unwrap_err().is(ErrorReason::LastManager));

    // Every byte either client sent: headers and bodies. No credential is among them.
    for (who, sent) in [("alice", &alice_sent), ("bob", &bob_sent)] {
        let sent = sent.lock().unwrap();
        assert!(sent.paths.iter().any(|p| p.ends_with("/CreateItem")) || who == "bob");
        for secret in ["alice-Pa55word", "alice-key-pass", "alice-ssh-secret", "bob-Pa55word", "local passphrase"] {
            assert!(!contains(&sent.bytes, secret), "{who}'s client sent {secret}");
        }
    }
    // And the credential files hold nothing in the clear.
    for entry in std::fs::read_dir(dir.path())? {
        let raw = std::fs::read(entry?.path())?;
        for secret in ["alice-Pa55word", "alice-ssh-secret", "bob-Pa55word", "bob"] {
            assert!(!contains(&raw, secret), "{secret} in the clear on disk");
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_sent_again_and_makes_one_folder() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let dir = tempfile::tempdir()?;
    let (carol, sent, _) =
        user(&cluster, "carol@example.com", dir.path(), Fault::DropFirstAnswer("/CreateFolder")).await?;
    let folder = carol.create_folder("Only once").await?;
    let listed: Vec<_> = carol.folders().try_collect().await?;
    assert_eq!(listed.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), [folder.id.as_str()], "one folder");
    let creates = sent.lock().unwrap().paths.iter().filter(|p| p.ends_with("/CreateFolder")).count();
    assert_eq!(creates, 2, "the first answer was lost and the create was sent again");
    Ok(())
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_once_for_every_waiting_call() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let dir = tempfile::tempdir()?;
    let (dan, sent, sessions) = user(&cluster, "dan@example.com", dir.path(), Fault::None).await?;
    let folder = dan.create_folder("Refreshing").await?;
    let before = sessions.load()?.expect("kept").refresh_token.clone();
    // The server's clock passes the access token's 15 minutes; the SDK's does not know.
    cluster.clock.advance(Duration::from_secs(901));
    let calls = (0..12).map(|_| {
        let dan = dan.clone();
        let id = folder.id.clone();
        async move { dan.folder(&id).await }
    });
    for answer in futures::future::join_all(calls).await {
        assert_eq!(answer?.id, folder.id);
    }
    let refreshes = sent.lock().unwrap().paths.iter().filter(|p| p.ends_with("/RefreshSession")).count();
    assert_eq!(refreshes, 1, "one refresh served every waiting call");
    let after = sessions.load()?.expect("kept").refresh_token.clone();
    assert_ne!(before, after, "the rotated refresh token was handed to the session store");
    Ok(())
}

#[tokio::test]
async fn sdk_errors_are_typed_and_name_the_field() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let dir = tempfile::tempdir()?;
    let (erin, _, _) = user(&cluster, "erin@example.com", dir.path(), Fault::None).await?;
    let e = erin.create_folder("   ").await.unwrap_err();
    let api = e.api().expect("a server answer");
    assert!(api.is(ErrorReason::InvalidField));
    assert_eq!(api.violations.first().map(|v| v.field.as_str()), Some("name"));
    // A connection secret is refused before anything is sent.
    let folder = erin.create_folder("Mine").await?;
    let leaky = Connection { connection_string: "mongodb://u:pw@h:1/".into(), ..Default::default() };
    let e = erin.create_item(&folder.id, "leaky", "", item_content::Content::Connection(leaky)).await.unwrap_err();
    assert!(matches!(e, ts_client::Error::InvalidInput { field: "content", .. }), "{e:?}");
    // Signed out: the session store is emptied and calls say so.
    erin.sign_out().await?;
    assert!(matches!(erin.folder(&folder.id).await.unwrap_err(), ts_client::Error::NotSignedIn));
    Ok(())
}

#[tokio::test]
async fn a_connection_edited_to_point_elsewhere_receives_nobodys_password() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let dir = tempfile::tempdir()?;
    let (alice, _, _) = user(&cluster, "alice@example.com", dir.path(), Fault::None).await?;
    let (mallory, _, _) = user(&cluster, "mallory@example.com", dir.path(), Fault::None).await?;
    let folder = alice.create_folder("Shared").await?;
    let typed = Connection {
        connection_string: "mongodb://alice@db1.internal:27017/admin?tls=true".into(),
        ..Default::default()
    };
    let mine = LocalCredentials { password: Some("alice-Pa55word".into()), ..Default::default() };
    let shared = alice
        .share_connection(&folder.id, "Prod", "", ConnectionInput { connection: typed, credentials: mine })
        .await?;
    let item = shared.item.summary.expect("summary");
    let invitation = alice.invite(&folder.id, "mallory@example.com", AccessLevel::Edit).await?;
    mallory.accept_invitation(&invitation.id).await?;
    assert!(alice.connection_uri(&folder.id, &item.id).await?.contains("alice-Pa55word"));

    // Mallory (EDIT) points the shared connection at her own server, without TLS.
    let evil = Connection {
        connection_string: "mongodb://alice@mallory.example:27017/admin?tls=false&authMechanism=PLAIN".into(),
        ..Default::default()
    };
    mallory
        .api()
        .update_item(ts_client::proto::UpdateItemRequest {
            folder_id: folder.id.clone(),
            item_id: item.id.clone(),
            expected_version: item.version,
            name: item.name.clone(),
            description: String::new(),
            content: Some(ts_client::proto::ItemContent { content: Some(item_content::Content::Connection(evil)) }),
        })
        .await?;
    let refused = alice.connection_uri(&folder.id, &item.id).await.unwrap_err();
    assert!(matches!(refused, ts_client::Error::InvalidInput { field: "item_id", .. }), "{refused:?}");
    // Alice looks, and decides to keep her credentials for it after all: they bind anew.
    alice.set_credentials(&item.id, &LocalCredentials::default())?;
    assert!(
        alice.connection_uri(&folder.id, &item.id).await?.starts_with("mongodb://alice:alice-Pa55word@mallory.example")
    );
    Ok(())
}

#[tokio::test]
async fn a_kept_session_is_never_sent_to_another_gateway() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let dir = tempfile::tempdir()?;
    let (frank, _, sessions) = user(&cluster, "frank@example.com", dir.path(), Fault::None).await?;
    frank.create_folder("Mine").await?;
    assert!(sessions.load()?.is_some());
    // A client of the same session store told to use another gateway (a typo, a hostile
    // TEAMSHARE_ENDPOINT): the kept refresh token is not sent there.
    let (transport, seen) = capturing(&cluster, Fault::None).await?;
    let mut elsewhere = config(&cluster);
    elsewhere.endpoint = "https://gateway.attacker.example:8443".into();
    let other = Client::with_transport(transport, elsewhere, sessions.clone());
    let e = other.folders().try_collect::<Vec<_>>().await.unwrap_err();
    assert!(matches!(e, ts_client::Error::NotSignedIn), "{e:?}");
    assert!(seen.lock().unwrap().paths.is_empty(), "nothing was sent");
    Ok(())
}
