// The status dot and text. What they say is decided once, in Rust
// (`roger_client::app::presentation`), and sent with every state as `presentation`;
// the tray shows the same. Only the ticking countdown is done here, with the clock.

import type { Status, StatusPresentation } from "./ipc";

export type DotColor = StatusPresentation["dot"];

export interface StatusView {
  /** The dot (same colours as the tray icon). */
  color: DotColor;
  /** What the header shows, countdown included. */
  text: string;
  /** The same without the ticking countdown: what a screen reader is told. */
  announce: string;
}

/** Whole seconds until `atMs` (rounded up), or `null` when it is due. */
export function secondsUntil(atMs: number, nowMs: number): number | null {
  const s = Math.ceil((atMs - nowMs) / 1000);
  return s > 0 ? s : null;
}

/** The dot colour and text of a presentation at `nowMs`. */
export function statusView(p: StatusPresentation, nowMs: number): StatusView {
  if (p.countdown_to_ms === null) return { color: p.dot, text: p.label, announce: p.label };
  const secs = secondsUntil(p.countdown_to_ms, nowMs);
  const tail = secs === null ? "next try now" : `next try in ${secs} s`;
  return { color: p.dot, text: `${p.label}, ${tail}`, announce: p.label };
}

/** Whether the status text changes with the clock (the header then ticks). */
export function statusTicks(p: StatusPresentation): boolean {
  return p.countdown_to_ms !== null;
}

/** Push-to-talk can start: media is up (a degraded link still carries audio). */
export function canTalk(status: Status): boolean {
  return status.status === "Connected" || status.status === "Degraded";
}
