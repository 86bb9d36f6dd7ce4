//! The movement rule, shared so that a client predicts exactly what the server
//! will compute for its own inputs.

use crate::ws::WorldRules;

pub const WORLD_WIDTH: f32 = 800.0;
pub const WORLD_HEIGHT: f32 = 600.0;
/// Units per second at full input.
pub const PLAYER_SPEED: f32 = 200.0;
pub const PICKUP_RADIUS: f32 = 20.0;
pub const DEFAULT_TICK_RATE: u32 = 20;

pub fn rules(tick_rate: u32) -> WorldRules {
    WorldRules {
        width: WORLD_WIDTH,
        height: WORLD_HEIGHT,
        speed: PLAYER_SPEED,
        tick_rate,
        pickup_radius: PICKUP_RADIUS,
    }
}

/// An input direction as the server accepts it: both parts finite and within
/// [-1, 1], scaled down to length 1 so that diagonals are no faster.
pub fn direction(dx: f32, dy: f32) -> Option<(f32, f32)> {
    if !(dx.is_finite() && dy.is_finite()) || dx.abs() > 1.0 || dy.abs() > 1.0 {
        return None;
    }
    let length = (dx * dx + dy * dy).sqrt();
    Some(if length > 1.0 { (dx / length, dy / length) } else { (dx, dy) })
}

/// Where one input of one tick moves a player, kept inside the world.
pub fn step(x: f32, y: f32, (dx, dy): (f32, f32), tick_rate: u32) -> (f32, f32) {
    let distance = PLAYER_SPEED / tick_rate as f32;
    ((x + dx * distance).clamp(0.0, WORLD_WIDTH), (y + dy * distance).clamp(0.0, WORLD_HEIGHT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonals_are_no_faster_and_the_world_has_walls() {
        let (dx, dy) = direction(1.0, 1.0).unwrap();
        assert!(((dx * dx + dy * dy).sqrt() - 1.0).abs() < 1e-6);
        assert_eq!(step(5.0, 300.0, (-1.0, 0.0), 20), (0.0, 300.0));
        assert_eq!(step(100.0, 100.0, (1.0, 0.0), 20), (110.0, 100.0));
        assert!(direction(f32::NAN, 0.0).is_none());
        assert!(direction(1.5, 0.0).is_none());
    }
}
