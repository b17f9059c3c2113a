// Small pure formatters.

import type { Notice } from "./ipc";

/** The toast for a notice. */
export function noticeText(notice: Notice): string {
  switch (notice.kind) {
    case "recovered":
      return `Reconnected in ${(notice.ms / 1000).toFixed(1)} s`;
    case "talk_ended":
      return notice.message;
    case "missed":
      return `Missed while reconnecting: ${notice.by}, ${Math.max(1, Math.round(notice.ms / 1000))} s`;
    default:
      return "";
  }
}

/** `812 ms`, `1.2 s`. */
export function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** Local wall-clock time with milliseconds: `14:03:07.215`. */
export function formatClock(atMs: number): string {
  const d = new Date(atMs);
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** `0.97` -> `97%`. */
export function formatPercent(fraction: number): string {
  if (!Number.isFinite(fraction)) return "–";
  return `${Math.round(fraction * 1000) / 10}%`;
}

const MODIFIER_CODES = new Set([
  "ShiftLeft",
  "ShiftRight",
  "ControlLeft",
  "ControlRight",
  "AltLeft",
  "AltRight",
  "MetaLeft",
  "MetaRight",
  "OSLeft",
  "OSRight",
  "CapsLock",
  "Fn",
  "FnLock",
]);

const MODIFIER_KEYS = new Set(["Shift", "Control", "Alt", "Meta", "OS", "AltGraph", "CapsLock", "Fn"]);

/** The modifiers held, in the order shortcuts are written. */
export function modifierNames(e: Pick<KeyboardEvent, "ctrlKey" | "altKey" | "shiftKey" | "metaKey">): string[] {
  const mods: string[] = [];
  if (e.ctrlKey) mods.push("Ctrl");
  if (e.altKey) mods.push("Alt");
  if (e.shiftKey) mods.push("Shift");
  if (e.metaKey) mods.push("Super");
  return mods;
}

/** The key part of a shortcut from `KeyboardEvent.code` (layout independent). */
export function keyName(code: string, key: string): string | null {
  if (MODIFIER_CODES.has(code) || MODIFIER_KEYS.has(key)) return null;
  let m = /^Key([A-Z])$/.exec(code);
  if (m) return m[1]!;
  m = /^Digit([0-9])$/.exec(code);
  if (m) return m[1]!;
  if (/^F([1-9]|1[0-9]|2[0-4])$/.test(code)) return code;
  if (code && code !== "Unidentified") return code;
  if (key && key.length === 1 && key !== " ") return key.toUpperCase();
  if (key === " ") return "Space";
  return key && key !== "Unidentified" && key !== "Dead" ? key : null;
}

/**
 * A key combination as the global-shortcut plugin reads it: `Ctrl+Shift+Space`, `F8`.
 * `null` while only modifiers are down.
 */
export function formatHotkey(
  e: Pick<KeyboardEvent, "code" | "key" | "ctrlKey" | "altKey" | "shiftKey" | "metaKey">,
): string | null {
  const key = keyName(e.code, e.key);
  if (key === null) return null;
  return [...modifierNames(e), key].join("+");
}
