/**
 * How long to wait before reconnect attempt `attempt` (0 for the first after
 * a drop): "full jitter", a uniform draw in [0, min(max, base × 2^attempt)],
 * so that clients dropped together (a server restart) do not come back
 * together. `random` is a draw in [0, 1). Pure, so its bounds are tested
 * without waiting.
 */
export function backoffDelay(attempt: number, base: number, max: number, random: number): number {
  return random * Math.min(max, base * 2 ** Math.min(attempt, 30));
}
