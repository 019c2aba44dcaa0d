//! `hs-bench push-rules`: push-rule evaluations per second for one message in
//! a room of `--members` members, calling the engine's evaluator directly
//! (the work the push worker does per recipient after a send).
//!
//! Every member has the server-default ruleset (compiled once, as the
//! homeserver caches it) and their own display name. The message is an
//! ordinary group message without mentions, so each evaluation tries every
//! override rule (the spec has no default content rules since v1.17) and the
//! underride rules before it before `.m.rule.message` matches: the common and
//! the slowest path of the default rules.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use clap::Args as ClapArgs;
use engine::push::{
    conditions::{EventContext, Recipient},
    evaluator::CompiledRules,
    rules::server_default,
};
use serde_json::json;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Joined members of the room (each is evaluated but the sender).
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// How long to measure, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

pub async fn run(args: Args) -> Result<()> {
    ensure!(args.members >= 2, "--members must be at least 2");
    let users: Vec<(String, String)> = (0..args.members)
        .map(|i| {
            (
                format!("@user{i}:bench.example"),
                format!("User Number {i}"),
            )
        })
        .collect();
    let compile_start = Instant::now();
    let rules: Vec<CompiledRules> = users
        .iter()
        .map(|(u, _)| CompiledRules::compile(&server_default(u)))
        .collect();
    let compile = compile_start.elapsed();
    let event = json!({
        "type": "m.room.message",
        "room_id": "!bench:bench.example",
        "sender": users[0].0,
        "content": {
            "msgtype": "m.text",
            "body": "Lunch at the usual place at one? Bring the slides for the afternoon review, please.",
        },
    });
    let levels = serde_json::Value::Null;
    let ctx = EventContext {
        event: &event,
        member_count: args.members as u64,
        sender_power: 0,
        notification_levels: &levels,
    };
    let deadline = Duration::from_secs(args.seconds.max(1));
    let start = Instant::now();
    let (mut evaluations, mut messages, mut notified) = (0u64, 0u64, 0u64);
    while start.elapsed() < deadline {
        for ((user, name), rules) in users.iter().zip(&rules).skip(1) {
            let who = Recipient {
                user_id: user,
                display_name: Some(name),
            };
            if rules.evaluate(&ctx, &who).is_some_and(|o| o.notify) {
                notified += 1;
            }
            evaluations += 1;
        }
        messages += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    ensure!(
        notified == evaluations,
        "every member should be notified by .m.rule.message"
    );
    println!(
        "push-rules: {} members, default rules, one group message",
        args.members
    );
    println!(
        "  compile rulesets:  {:.1} ms for {} users",
        compile.as_secs_f64() * 1000.0,
        args.members
    );
    println!("  evaluations/s:     {:.0}", evaluations as f64 / secs);
    println!(
        "  messages/s:        {:.0} (all {} recipients evaluated per message)",
        messages as f64 / secs,
        args.members - 1
    );
    println!(
        "  per evaluation:    {:.2} µs",
        secs * 1e6 / evaluations as f64
    );
    Ok(())
}
