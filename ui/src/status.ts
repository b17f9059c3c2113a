// The status dot and text, as pure functions of the status and the clock.

import type { ErrorCode, Status } from "./ipc";

export type DotColor = "green" | "amber" | "red" | "grey";

export interface StatusView {
  /** The dot (same colours as the tray icon). */
  color: DotColor;
  /** What the header shows, countdown included. */
  text: string;
  /** The same without the ticking countdown: what a screen reader is told. */
  announce: string;
}

/** A sentence per code (the same words as `ErrorCode::user_message` in Rust). */
const CODE_TEXT: Record<ErrorCode, string> = {
  MALFORMED_MESSAGE: "The app and the server misunderstood each other.",
  UNKNOWN_METHOD: "The app and the server misunderstood each other.",
  NOT_AUTHENTICATED: "The app and the server misunderstood each other.",
  ALREADY_AUTHENTICATED: "The app and the server misunderstood each other.",
  UNSUPPORTED_PROTOCOL_VERSION: "This app and the server speak different versions. Update the app.",
  MESSAGE_TOO_LARGE: "A message to the server was too large.",
  RATE_LIMITED: "Too many requests; slowing down.",
  TOKEN_EXPIRED: "Your sign-in has expired. Sign in again.",
  TOKEN_INVALID: "Your sign-in was not accepted. Check the token.",
  CHANNEL_NOT_ALLOWED: "You are not allowed in that channel.",
  SESSION_EXPIRED: "The session ended while you were away. Rejoining.",
  SESSION_REPLACED: "You signed in somewhere else, so this window left.",
  SERVER_FULL: "The server is full. Try again in a moment.",
  SERVER_DRAINING: "The server is restarting. Reconnecting shortly.",
  CHANNEL_NOT_FOUND: "That channel does not exist.",
  NOT_IN_CHANNEL: "Join the channel first.",
  FLOOR_NOT_HELD: "You are not holding the floor.",
  FLOOR_DENIED: "Someone else is talking.",
  SDP_NEGOTIATION_ERROR: "Could not set up audio with the server.",
  ICE_GATHERING_TIMEOUT: "Could not find a network path for audio.",
  ICE_FAILED: "The audio connection failed. Check your network.",
  MEDIA_DEVICE_ERROR: "Your microphone or speaker stopped working.",
  SIGNALING_TIMEOUT: "The server stopped answering.",
  SIGNALING_UNREACHABLE: "Cannot reach the server. Check the address.",
  SIGNALING_CLOSED: "The connection to the server closed.",
  CERTIFICATE_INVALID: "The server's security certificate is not valid. Check the address.",
  INVALID_SETTINGS: "A setting is not valid. Check it and save again.",
  INTERNAL_ERROR: "Something went wrong inside Roger.",
  UNKNOWN: "Something went wrong.",
};

/** A short sentence for a code; unknown codes (from a newer core) get a generic one. */
export function codeText(code: ErrorCode | string): string {
  return (CODE_TEXT as Record<string, string>)[code] ?? CODE_TEXT.UNKNOWN;
}

/** Whole seconds until `atMs` (rounded up), or `null` when it is due. */
export function secondsUntil(atMs: number, nowMs: number): number | null {
  const s = Math.ceil((atMs - nowMs) / 1000);
  return s > 0 ? s : null;
}

/**
 * The dot colour and text for a status at `nowMs`.
 * `failedMessage` (the banner's message) is preferred for `Failed` when given.
 */
export function statusView(status: Status, nowMs: number, failedMessage?: string): StatusView {
  switch (status.status) {
    case "Connected":
      return { color: "green", text: "Connected", announce: "Connected" };
    case "Connecting":
      return { color: "amber", text: "Connecting…", announce: "Connecting" };
    case "Degraded": {
      const text = status.reason ? `Degraded: ${status.reason}` : "Degraded";
      return { color: "amber", text, announce: text };
    }
    case "Reconnecting": {
      const head = `Reconnecting (${status.attempt}/${status.max})`;
      const secs = secondsUntil(status.retry_at_ms, nowMs);
      const tail = secs === null ? "next try now" : `next try in ${secs} s`;
      return { color: "amber", text: `${head}, ${tail}`, announce: head };
    }
    case "Failed": {
      const text = `Failed: ${failedMessage || codeText(status.code)}`;
      return { color: "red", text, announce: text };
    }
    case "Offline":
      return { color: "grey", text: "Offline", announce: "Offline" };
    default: {
      // A status this build does not know (a newer core): say its name, grey dot.
      const name = String((status as { status?: unknown }).status ?? "Unknown");
      return { color: "grey", text: name, announce: name };
    }
  }
}

/** Whether the status text changes with the clock (the header then ticks). */
export function statusTicks(status: Status): boolean {
  return status.status === "Reconnecting";
}

/** Push-to-talk can start: media is up (a degraded link still carries audio). */
export function canTalk(status: Status): boolean {
  return status.status === "Connected" || status.status === "Degraded";
}
