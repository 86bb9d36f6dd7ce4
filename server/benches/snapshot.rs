//! One room's snapshot per tick: build the message from the world and serialize it
//! once (then the room shares the same bytes with every member, see `Room::tick`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use tether::game::world::World;
use tether_shared::ws::ServerMessage;

const TICK_RATE: u32 = 20;
/// Ticks played before measuring, so that positions, scores and acks look like a game's.
const WARM_TICKS: u32 = 40;

/// A room with `players` avatars that have been moving for a while.
fn played_world(players: u32, seed: u64) -> World {
    let mut world = World::new(TICK_RATE, seed);
    for id in 1..=players {
        world.add_player(id);
    }
    for seq in 1..=WARM_TICKS {
        for id in 1..=players {
            // A different heading per player, turning slowly.
            let angle = (id * 37 + seq * 3) as f32 * 0.1;
            world.queue_input(id, seq, angle.cos(), angle.sin());
        }
        world.advance();
    }
    world
}

fn snapshot(world: &World) -> ServerMessage {
    ServerMessage::Snapshot {
        room: tether::game::LOBBY.to_owned(),
        tick: world.tick(),
        players: world.players(),
        items: world.items().to_vec(),
    }
}

fn snapshot_serialization(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for players in [32, 100] {
        let world = played_world(players, 7);
        let bytes = serde_json::to_string(&snapshot(&world)).expect("serializes").len();
        eprintln!("snapshot frame with {players} players: {bytes} bytes");
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::new("build_and_serialize", players), &world, |b, world| {
            b.iter(|| serde_json::to_string(&snapshot(black_box(world))).expect("serializes"))
        });
    }
    group.finish();
}

criterion_group!(benches, snapshot_serialization);
criterion_main!(benches);
