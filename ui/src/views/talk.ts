// The main view: the PTT button with its meters, the channels and the members.

import type { Ctx, View } from "../context";
import { h, setAttr, setText, syncList } from "../dom";
import { api, type AppState, type ChannelInfo, type Member } from "../ipc";
import { createMeter, type Meter } from "../levels";
import { pttView, wireHold, wireSpace, type Hold } from "../ptt";
import { canTalk } from "../status";
import { HistoryPanel } from "./history";

/** Why PTT cannot start, or `null` when it can. */
export function pttBlocker(state: AppState): string | null {
  if (!state.signed_in) return "sign in first";
  if (!canTalk(state.status)) return "not connected";
  if (state.channel === null) return "join a channel first";
  return null;
}

export class TalkView implements View {
  readonly el: HTMLElement;
  private readonly ptt: HTMLButtonElement;
  private readonly pttLabel: HTMLElement;
  private readonly pttDetail: HTMLElement;
  private readonly context: HTMLElement;
  private readonly channelList: HTMLUListElement;
  private readonly channelError: HTMLElement;
  private readonly channelsEmpty: HTMLElement;
  private readonly leave: HTMLButtonElement;
  private readonly members: HTMLUListElement;
  private readonly membersEmpty: HTMLElement;
  private readonly meters: Meter[];
  private readonly history: HistoryPanel;
  private readonly hold: Hold;
  private readonly disposers: (() => void)[] = [];
  private state: AppState | null = null;
  private joining: string | null = null;

  constructor(private readonly ctx: Ctx) {
    this.pttLabel = h("span", { class: "ptt-label" }, "Hold to talk");
    this.pttDetail = h("span", { class: "ptt-detail" });
    this.ptt = h(
      "button",
      { type: "button", class: "ptt", "data-testid": "ptt", "data-state": "idle" },
      this.pttLabel,
      this.pttDetail,
    );
    const wired = wireHold(this.ptt, {
      canStart: () => this.state !== null && pttBlocker(this.state) === null,
      down: () => this.send(true),
      up: () => this.send(false),
      onChange: (pressed) => this.ptt.classList.toggle("pressed", pressed),
    });
    this.hold = wired.hold;
    this.disposers.push(wired.dispose);
    this.disposers.push(
      wireSpace(ctx.win, this.hold, {
        active: () => ctx.shown() === "main" && !ctx.keyboardCaptured(),
      }),
    );

    const mic = createMeter("tx", "Microphone level", { vertical: true, testid: "meter-tx" });
    const incoming = createMeter("rx", "Incoming audio level", {
      vertical: true,
      testid: "meter-rx",
    });
    this.meters = [mic, incoming];
    for (const m of this.meters) ctx.levels.add(m);

    this.context = h("p", { class: "ptt-context", "data-testid": "ptt-context" });
    this.channelList = h("ul", { class: "channel-list", "data-testid": "channels" });
    this.channelError = h("p", { class: "inline-error", role: "alert", hidden: true });
    this.channelsEmpty = h("p", { class: "muted" }, "No channels yet.");
    this.leave = h(
      "button",
      {
        type: "button",
        class: "button subtle small",
        "data-testid": "leave",
        hidden: true,
        onclick: () => this.leaveChannel(),
      },
      "Leave",
    );
    this.members = h("ul", {
      class: "member-list",
      "data-testid": "members",
      "aria-labelledby": "members-heading",
    });
    this.membersEmpty = h("p", { class: "muted" }, "Join a channel to see who is there.");
    this.history = new HistoryPanel(
      (e) => ctx.reportError(e),
      () => ctx.now(),
    );

    this.el = h(
      "section",
      { class: "view view-talk", "aria-label": "Talk" },
      h(
        "div",
        { class: "ptt-area" },
        h("div", { class: "meter-col" }, mic.el, h("span", { class: "meter-caption" }, "Mic")),
        this.ptt,
        h("div", { class: "meter-col" }, incoming.el, h("span", { class: "meter-caption" }, "In")),
      ),
      this.context,
      h(
        "section",
        { class: "panel", "aria-labelledby": "channels-heading" },
        h(
          "div",
          { class: "panel-head" },
          h("h2", { id: "channels-heading" }, "Channels"),
          this.leave,
        ),
        this.channelList,
        this.channelsEmpty,
        this.channelError,
      ),
      h(
        "section",
        { class: "panel", "aria-labelledby": "members-heading" },
        h("div", { class: "panel-head" }, h("h2", { id: "members-heading" }, "Members")),
        this.members,
        this.membersEmpty,
      ),
      this.history.el,
    );
  }

  update(state: AppState): void {
    this.state = state;
    this.paintPtt();
    this.paintChannels(state);
    this.paintMembers(state);
    this.history.update(state);
  }

  tick(): void {
    this.paintPtt();
    this.history.tick();
  }

  hide(): void {
    // Leaving the view (or the sign-in view replacing it) must not leave the floor held.
    this.hold.release();
  }

  dispose(): void {
    for (const d of this.disposers) d();
    for (const m of this.meters) this.ctx.levels.remove(m);
  }

  private send(down: boolean): void {
    const call = down ? api.pttDown() : api.pttUp();
    void call.then((r) => {
      if (r.status === "error") this.ctx.reportError(r.error);
    });
  }

  private paintPtt(): void {
    const state = this.state;
    if (!state) return;
    const view = pttView(state.ptt, this.ctx.now(), this.ctx.hotkey());
    setAttr(this.ptt, "data-state", view.state);
    setText(this.pttLabel, view.label);
    setText(this.pttDetail, view.detail);
    this.pttDetail.hidden = view.detail === "";
    const blocker = pttBlocker(state);
    setAttr(this.ptt, "aria-disabled", blocker ? "true" : null);
    setAttr(this.ptt, "aria-label", blocker ? `Push to talk is unavailable: ${blocker}` : null);
    this.ptt.classList.toggle("disabled", blocker !== null);
    const context =
      state.channel !== null
        ? `Channel #${state.channel}`
        : state.signed_in
          ? "Join a channel to talk"
          : "Sign in to talk";
    setText(this.context, context);
  }

  private paintChannels(state: AppState): void {
    syncList<ChannelInfo, HTMLLIElement>(
      this.channelList,
      state.channels,
      (c) => c.id,
      (c) => this.channelItem(c),
      (li, c) => {
        const joined = state.channel === c.id;
        const button = li.firstElementChild as HTMLButtonElement;
        setAttr(button, "aria-current", joined ? "true" : null);
        setAttr(button, "aria-busy", this.joining === c.id ? "true" : null);
        li.classList.toggle("joined", joined);
        const desc = button.querySelector(".channel-desc") as HTMLElement;
        setText(desc, c.description);
        desc.hidden = c.description === "";
      },
    );
    this.channelList.hidden = state.channels.length === 0;
    this.channelsEmpty.hidden = state.channels.length > 0;
    setText(
      this.channelsEmpty,
      state.signed_in ? "No channels yet." : "Sign in to see your channels.",
    );
    this.leave.hidden = state.channel === null;
    setAttr(this.leave, "aria-label", state.channel !== null ? `Leave #${state.channel}` : null);
  }

  private channelItem(c: ChannelInfo): HTMLLIElement {
    return h(
      "li",
      { class: "channel-item" },
      h(
        "button",
        {
          type: "button",
          class: "channel",
          "data-testid": `channel-${c.id}`,
          onclick: () => this.join(c.id),
        },
        h("span", { class: "channel-name" }, `#${c.id}`),
        h("span", { class: "channel-desc" }, c.description),
        h("span", { class: "joined-badge" }, "Joined"),
      ),
    );
  }

  private join(id: string): void {
    if (this.state?.channel === id || this.joining !== null) return;
    this.joining = id;
    this.channelError.hidden = true;
    if (this.state) this.paintChannels(this.state);
    void api.joinChannel(id).then((r) => {
      this.joining = null;
      if (r.status === "error") {
        this.channelError.textContent = `${r.error.message} (${r.error.code})`;
        this.channelError.hidden = false;
      }
      if (this.state) this.paintChannels(this.state);
    });
  }

  private leaveChannel(): void {
    void api.leaveChannel().then((r) => {
      if (r.status === "error") this.ctx.reportError(r.error);
    });
  }

  private paintMembers(state: AppState): void {
    const members = state.channel === null ? [] : state.members;
    syncList<Member, HTMLLIElement>(
      this.members,
      members,
      (m) => m.user,
      () =>
        h(
          "li",
          { class: "member" },
          h("span", { class: "member-dot", "aria-hidden": "true" }),
          h("span", { class: "member-name" }),
          h("span", { class: "member-you" }),
          h("span", { class: "talking-badge" }),
        ),
      (li, m) => {
        const you = state.user !== null && state.user.user === m.user;
        const talking = state.talker !== null && state.talker.user === m.user;
        li.dataset.user = m.user;
        li.classList.toggle("talking", talking);
        li.classList.toggle("you", you);
        setText(li.querySelector(".member-name")!, m.name);
        setText(li.querySelector(".member-you")!, you ? " (you)" : "");
        setText(li.querySelector(".talking-badge")!, talking ? "talking" : "");
      },
    );
    this.members.hidden = members.length === 0;
    this.membersEmpty.hidden = members.length > 0;
    setText(
      this.membersEmpty,
      state.channel === null ? "Join a channel to see who is there." : "Nobody else is here yet.",
    );
  }
}
