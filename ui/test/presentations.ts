// Rust's presentation of each status the tests use (`presentations.json`, written and
// checked by roger-client's presentation tests): the window's tests render exactly
// what the tray shows.

import type { Status, StatusPresentation } from "../src/ipc";
import fixtures from "./presentations.json";

interface Case {
  status: Status;
  failure: string | null;
  presentation: StatusPresentation;
}

const CASES = fixtures as Case[];

/** Every status Rust presented for the tests, with the banner message it was given. */
export const PRESENTED: readonly Case[] = CASES;

/** Rust's presentation of `status` (with the banner's `failure` message, for Failed). */
export function present(status: Status, failure: string | null = null): StatusPresentation {
  const key = JSON.stringify(status);
  const hit = CASES.find((c) => JSON.stringify(c.status) === key && c.failure === failure);
  if (!hit) {
    throw new Error(
      `no Rust presentation of ${key} (failure ${failure}): add it to the fixture test in crates/roger-client/src/app/presentation.rs and run make bindings`,
    );
  }
  return hit.presentation;
}
