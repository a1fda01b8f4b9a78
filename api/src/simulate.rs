//! `aemos simulate`: air purifiers (seed 003's device simulator) over MQTT, one rumqttc client
//! each. Every `--interval` a device publishes its readings (temperature, humidity, pm1, pm25,
//! pm10, sound, voc, fanSpeed, power, networkStrength; each a small random walk, the particles
//! falling faster at higher fan speeds) on `aemos/devices/{id}/telemetry`; it obeys the commands
//! on `aemos/devices/{id}/commands` and acknowledges each on `.../acks` with its new fan speed
//! and power. A share of the devices go silent after their first reading
//! (`--offline-share`), another share never acknowledge (`--drop-commands-share`), so that
//! offline devices, retries and timeouts can be seen. Credentials: `--tokens FILE` (a JSON array
//! of `{"id", "token"}`, the answers of `POST /api/v1/devices`), or `--register` to create the
//! devices (or rotate their tokens) with `--admin-token`; neither: no credentials (`dev` mode).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

use crate::cli::SimulateArgs;

#[derive(Debug, Default)]
struct Counts {
    readings: AtomicU64,
    commands: AtomicU64,
    acks: AtomicU64,
    disconnects: AtomicU64,
}

/// One purifier's state.
#[derive(Debug)]
struct Purifier {
    values: [f64; 7],
    fan_speed: u64,
    power: bool,
    network: f64,
}

const NAMES: [&str; 7] = [
    "temperature",
    "humidity",
    "pm1",
    "pm25",
    "pm10",
    "sound",
    "voc",
];
/// Start, step and range of each value.
const WALK: [(f64, f64, f64, f64); 7] = [
    (22.0, 0.2, 15.0, 35.0),
    (45.0, 0.5, 20.0, 80.0),
    (8.0, 0.8, 0.0, 300.0),
    (12.0, 1.0, 0.0, 500.0),
    (20.0, 1.2, 0.0, 600.0),
    (35.0, 1.0, 25.0, 80.0),
    (150.0, 5.0, 0.0, 1000.0),
];

impl Purifier {
    fn new(rng: &mut SmallRng) -> Self {
        Self {
            values: WALK.map(|(start, step, lo, hi)| {
                (start + rng.random_range(-10.0..10.0) * step).clamp(lo, hi)
            }),
            fan_speed: 1,
            power: true,
            network: rng.random_range(-80.0..-40.0),
        }
    }

    fn step(&mut self, rng: &mut SmallRng) -> Value {
        let cleaning = if self.power {
            self.fan_speed as f64 * 0.3
        } else {
            0.0
        };
        for (i, (_, step, lo, hi)) in WALK.iter().enumerate() {
            let drift = if (2..=4).contains(&i) { -cleaning } else { 0.0 };
            let v = self.values[i] + rng.random_range(-1.0..1.0) * step + drift;
            self.values[i] = v.clamp(*lo, *hi);
        }
        self.network = (self.network + rng.random_range(-1.0..1.0)).clamp(-95.0, -30.0);
        let mut body = serde_json::Map::new();
        for (name, v) in NAMES.iter().zip(self.values) {
            body.insert((*name).into(), json!((v * 10.0).round() / 10.0));
        }
        body.insert("fanSpeed".into(), json!(self.fan_speed));
        body.insert("power".into(), json!(u8::from(self.power)));
        body.insert("networkStrength".into(), json!(self.network.round()));
        Value::Object(body)
    }

    /// Applies a command; the ack's body.
    fn obey(&mut self, command: &Value) -> Value {
        let id = command.get("commandId").cloned().unwrap_or(Value::Null);
        let value = command.get("value");
        let outcome = match command.get("action").and_then(Value::as_str) {
            Some("setFanSpeed") => value.and_then(Value::as_u64).filter(|s| *s <= 5).map(|s| {
                self.fan_speed = s;
                self.power = s > 0;
            }),
            Some("setPower") => value.and_then(Value::as_bool).map(|on| {
                self.power = on;
            }),
            Some(on @ ("turnOn" | "turnOff")) => {
                self.power = on == "turnOn";
                Some(())
            }
            _ => None,
        };
        match outcome {
            Some(()) => json!({"commandId": id, "status": "ok",
                "fanSpeed": self.fan_speed, "power": self.power}),
            None => json!({"commandId": id, "status": "error",
                "error": format!("cannot do {command}")}),
        }
    }
}

/// Device ids and their tokens (`None`: connect without credentials).
async fn credentials(args: &SimulateArgs) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let ids: Vec<String> = (0..args.devices)
        .map(|i| format!("{}{i:05}", args.prefix))
        .collect();
    if let Some(file) = &args.tokens {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let list: Vec<Value> = serde_json::from_str(&text).with_context(|| {
            format!("{}: a JSON array of {{\"id\", \"token\"}}", file.display())
        })?;
        let tokens: HashMap<&str, &str> = list
            .iter()
            .filter_map(|d| Some((d.get("id")?.as_str()?, d.get("token")?.as_str()?)))
            .collect();
        return ids
            .into_iter()
            .map(|id| match tokens.get(id.as_str()) {
                Some(t) => Ok((id, Some((*t).to_owned()))),
                None => anyhow::bail!("{}: no token for device {id:?}", file.display()),
            })
            .collect();
    }
    if !args.register {
        return Ok(ids.into_iter().map(|id| (id, None)).collect());
    }
    let http = reqwest::Client::new();
    let admin = args.admin_token.as_deref();
    let post = |path: String, body: Option<Value>| {
        let mut r = http.post(format!("{}{path}", args.url.trim_end_matches('/')));
        if let Some(t) = admin {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let mut r = post("/api/v1/devices".into(), Some(json!({"id": id}))).await?;
        if r.status() == reqwest::StatusCode::CONFLICT {
            r = post(format!("/api/v1/devices/{id}/token"), None).await?;
        }
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "registering {id}: {status} {body}");
        let token = body["token"].as_str().map(str::to_owned);
        out.push((id, token));
    }
    Ok(out)
}

async fn run_device(
    index: usize,
    id: String,
    token: Option<String>,
    args: Arc<SimulateArgs>,
    counts: Arc<Counts>,
) {
    let (host, port) = args.mqtt.rsplit_once(':').unwrap_or((&args.mqtt, "1883"));
    let mut options = MqttOptions::new(&id, host, port.parse().unwrap_or(1883));
    options.set_keep_alive(Duration::from_secs(60));
    if let Some(t) = &token {
        options.set_credentials(&id, t);
    }
    let share = |s: f64| (s.clamp(0.0, 1.0) * args.devices as f64).round() as usize;
    let goes_offline = index < share(args.offline_share);
    let drops = index >= args.devices - share(args.drop_commands_share);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let commands = format!("aemos/devices/{id}/commands");
    // A tick must not cancel the event loop's poll while it connects (that drops the
    // connection and the subscription with it): readings only between a CONNACK and an error.
    let mut connected = false;
    let mut rng = SmallRng::seed_from_u64(index as u64);
    let mut purifier = Purifier::new(&mut rng);
    // Spread the devices' readings over the interval.
    let offset = args.interval.mul_f64(rng.random_range(0.0..1.0));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, args.interval);
    let telemetry = format!("aemos/devices/{id}/telemetry");
    let acks = format!("aemos/devices/{id}/acks");
    loop {
        tokio::select! {
            _ = tick.tick(), if connected => {
                let body = purifier.step(&mut rng).to_string();
                if client.try_publish(&telemetry, QoS::AtLeastOnce, false, body).is_ok() {
                    counts.readings.fetch_add(1, Ordering::Relaxed);
                }
                if goes_offline {
                    let _ = client.try_disconnect();
                    let _ = drive_until_closed(&mut eventloop).await;
                    return;
                }
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    // A clean session each time: subscribe on every connect.
                    connected = true;
                    let _ = client.try_subscribe(&commands, QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    counts.commands.fetch_add(1, Ordering::Relaxed);
                    let command: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    let ack = purifier.obey(&command);
                    if !drops && client.try_publish(&acks, QoS::AtLeastOnce, false, ack.to_string()).is_ok() {
                        counts.acks.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    connected = false;
                    counts.disconnects.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
}

async fn drive_until_closed(eventloop: &mut EventLoop) -> Result<(), rumqttc::ConnectionError> {
    loop {
        eventloop.poll().await?;
    }
}

pub async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.devices > 0, "--devices must be at least 1");
    let devices = credentials(&args).await?;
    let args = Arc::new(args);
    let counts = Arc::new(Counts::default());
    for (index, (id, token)) in devices.into_iter().enumerate() {
        tokio::spawn(run_device(
            index,
            id,
            token,
            Arc::clone(&args),
            Arc::clone(&counts),
        ));
        // Connections opened at about 2,000 a second, not all at once.
        if index % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let start = Instant::now();
    let report = || {
        json!({
            "devices": args.devices,
            "seconds": start.elapsed().as_secs_f64().round(),
            "readings": counts.readings.load(Ordering::Relaxed),
            "commands": counts.commands.load(Ordering::Relaxed),
            "acks": counts.acks.load(Ordering::Relaxed),
            "disconnects": counts.disconnects.load(Ordering::Relaxed),
        })
    };
    let mut every = tokio::time::interval(Duration::from_secs(10));
    every.tick().await;
    loop {
        let done = async {
            match args.duration {
                Some(d) => tokio::time::sleep(d.saturating_sub(start.elapsed())).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = every.tick() => eprintln!("{}", report()),
            () = done => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("{}", report());
    Ok(())
}
