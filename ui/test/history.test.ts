import { afterEach, describe, expect, it } from "vitest";
import type { HistoryEntry } from "../src/ipc";
import { formatLength, historyKey } from "../src/views/history";
import { flush, makeState, mount, NOW, unmountAll } from "./helpers";

afterEach(() => unmountAll());

const entries: HistoryEntry[] = [
  { id: "t2", by: "Bob", start_ms: NOW - 60_000, duration_ms: 4_180, unplayed: true, live: false },
  { id: "t1", by: "Carol", start_ms: NOW - 600_000, duration_ms: 65_000, unplayed: false, live: false },
];

describe("history", () => {
  it("formats lengths and knows when to ask again", () => {
    expect(formatLength(4_180)).toBe("4 s");
    expect(formatLength(300)).toBe("1 s");
    expect(formatLength(65_000)).toBe("1 min 5 s");
    const up = makeState();
    expect(historyKey(up)).toBe("general|true|");
    expect(historyKey(makeState({ talker: { user: "u-bob", name: "Bob" } }))).toBe("general|true|u-bob");
    expect(historyKey(makeState({ channel: null }))).toBeNull();
  });

  it("lists the channel's transmissions with the unplayed marked, and Play plays one", async () => {
    const m = await mount({
      handlers: { channel_history: () => entries, play_transmission: () => null },
    });
    await flush();
    expect(m.calls.find((c) => c.cmd === "channel_history")?.args).toMatchObject({ channel: "general" });
    const items = [...m.$("history").querySelectorAll("li")];
    expect(items.map((li) => li.dataset.unplayed)).toEqual(["true", "false"]);
    expect(items[0].textContent).toContain("Bob");
    expect(items[0].textContent).toContain("4 s");
    expect(items[0].textContent).toContain("new");
    const play = m.$("history-play-t2") as HTMLButtonElement;
    expect(play.getAttribute("aria-label")).toContain("Play Bob");
    expect(play.getAttribute("aria-label")).toContain("unplayed");
    play.click();
    await flush();
    expect(m.calls.find((c) => c.cmd === "play_transmission")?.args).toMatchObject({ id: "t2" });
    expect(m.$("history-play-t2").textContent).toBe("Stop");
    expect(m.$("history").querySelector("li")!.dataset.unplayed).toBe("false");
    // Stop.
    (m.$("history-play-t2") as HTMLButtonElement).click();
    await flush();
    expect(m.calls.some((c) => c.cmd === "stop_playback")).toBe(true);
    expect(m.$("history-play-t2").textContent).toBe("Play");
  });

  it("asks again after a reconnect and when a talk ends", async () => {
    const m = await mount({ handlers: { channel_history: () => entries } });
    await flush();
    const asked = () => m.calls.filter((c) => c.cmd === "channel_history").length;
    expect(asked()).toBe(1);
    await m.emitState(makeState({ status: { status: "Reconnecting", attempt: 2, max: 5, retry_at_ms: NOW + 3000 } }));
    await m.emitState(makeState());
    await flush();
    expect(asked()).toBe(2);
    await m.emitState(makeState({ talker: { user: "u-bob", name: "Bob" } }));
    await m.emitState(makeState({ talker: null }));
    await flush();
    expect(asked()).toBe(4);
  });
});
