// artillery 2.0.21 sends a "test run" event to PostHog even with
// ARTILLERY_DISABLE_TELEMETRY set (only later versions, which need Node 22, skip it),
// and a load test here must send nothing beyond the machine it runs on.
class PostHog {
  capture() {}
  async shutdownAsync() {}
}

module.exports = { PostHog };
