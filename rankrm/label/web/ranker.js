// The ranking widget of `python -m rankrm.label`: a Streamlit custom component (v2) in plain
// JavaScript, loaded as is (no build step). It sends one trigger, `action`, per save or skip.
// Every text from the data is set with textContent, never innerHTML: answers are model output
// and may contain HTML, which must show as text.

const HELP =
  "Keys: \u2191/\u2193 or j/k select \u00b7 Shift+\u2191/\u2193 or J/K move \u00b7 1-9 move to that place \u00b7 " +
  "= or t tie with the answer above \u00b7 f flag \u00b7 s skip \u00b7 Enter save";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function button(cls, text, title, onClick) {
  const b = el("button", cls, text);
  b.type = "button";
  b.title = title;
  b.addEventListener("click", (e) => {
    e.stopPropagation();
    onClick();
  });
  return b;
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  // Local state survives reruns of the same item (same token); a new item starts afresh.
  let state = parentElement.__rrm;
  if (!state || state.token !== data.token) {
    state = { token: data.token, order: data.answers.map((a) => a.id), tiedUp: {}, focus: 0, flagged: false, note: "", sent: false };
    parentElement.__rrm = state;
  }
  const texts = new Map(data.answers.map((a) => [a.id, a.text]));
  parentElement.querySelectorAll(":scope > .rrm").forEach((n) => n.remove());
  const root = el("div", "rrm");
  parentElement.appendChild(root);

  const prompt = el("div", "rrm-prompt");
  prompt.appendChild(el("div", "rrm-caption", `Prompt \u00b7 item ${data.position}`));
  for (const [role, text] of data.prompt) {
    const turn = el("div", "rrm-turn");
    turn.appendChild(el("span", "rrm-role", role));
    turn.appendChild(el("div", "rrm-text", text));
    prompt.appendChild(turn);
  }
  if (!data.prompt.length) prompt.appendChild(el("div", "rrm-text rrm-muted", "(no prompt)"));
  root.appendChild(prompt);
  root.appendChild(el("div", "rrm-caption", "Answers, best first: drag them into order, or use the keys"));
  const list = el("ol", "rrm-list");
  root.appendChild(list);

  const cards = new Map();
  const above = () => new Map(state.order.map((id, i) => [id, i ? state.order[i - 1] : null]));

  function moveTo(id, pos) {
    const before = above();
    const order = state.order.filter((x) => x !== id);
    order.splice(Math.max(0, Math.min(pos, order.length)), 0, id);
    state.order = order;
    const after = above();
    for (const x of order) if (before.get(x) !== after.get(x)) delete state.tiedUp[x]; // a tie is with a neighbour
    layout();
  }

  function toggleTie(id) {
    if (state.order.indexOf(id) > 0) state.tiedUp[id] = !state.tiedUp[id];
    layout();
  }

  function focusAt(pos) {
    state.focus = Math.max(0, Math.min(pos, state.order.length - 1));
    layout();
    cards.get(state.order[state.focus]).focus();
  }

  function layout() {
    let tier = 0;
    state.order.forEach((id, pos) => {
      const tied = pos > 0 && !!state.tiedUp[id];
      if (pos > 0 && !tied) tier += 1;
      const card = cards.get(id);
      // Move a node only when out of place: re-inserting a node would take the keyboard focus away.
      if (list.children[pos] !== card) list.insertBefore(card, list.children[pos] || null);
      card.querySelector(".rrm-rank").textContent = tied ? `= #${tier + 1}` : `#${tier + 1}`;
      card.classList.toggle("rrm-tied", tied);
      card.classList.toggle("rrm-focus", pos === state.focus);
      const tie = card.querySelector(".rrm-tie");
      tie.disabled = pos === 0;
      tie.setAttribute("aria-pressed", String(tied));
      card.setAttribute("aria-label", `place ${pos + 1}, rank ${tier + 1}${tied ? " (tied with the answer above)" : ""}`);
    });
  }

  function send(kind) {
    if (state.sent) return;
    state.sent = true;
    root.classList.add("rrm-sent");
    const tied = state.order.map((id, pos) => pos > 0 && !!state.tiedUp[id]);
    setTriggerValue("action", { token: data.token, kind, order: state.order, tied, flagged: state.flagged, note: state.note });
  }

  function startDrag(id, e) {
    const card = cards.get(id);
    card.classList.add("rrm-dragging");
    const move = (ev) => {
      // Place = how many other cards have their middle above the pointer.
      let pos = 0;
      for (const other of state.order) {
        if (other === id) continue;
        const r = cards.get(other).getBoundingClientRect();
        if ((r.top + r.bottom) / 2 < ev.clientY) pos += 1;
      }
      if (state.order.indexOf(id) !== pos) moveTo(id, pos);
    };
    const up = () => {
      document.removeEventListener("pointermove", move);
      document.removeEventListener("pointerup", up);
      card.classList.remove("rrm-dragging");
      focusAt(state.order.indexOf(id));
    };
    document.addEventListener("pointermove", move);
    document.addEventListener("pointerup", up);
    e.preventDefault();
  }

  for (const id of state.order) {
    const card = el("li", "rrm-card");
    card.tabIndex = 0;
    card.dataset.id = String(id);
    const head = el("div", "rrm-head");
    head.appendChild(el("span", "rrm-handle", "\u2807\u2807"));
    head.appendChild(el("span", "rrm-rank"));
    const tools = el("span", "rrm-tools");
    tools.appendChild(button("rrm-tie", "= tie", "tie with the answer above (= or t)", () => toggleTie(id)));
    tools.appendChild(button("rrm-up", "\u2191", "move up (Shift+\u2191)", () => moveTo(id, state.order.indexOf(id) - 1)));
    tools.appendChild(button("rrm-down", "\u2193", "move down (Shift+\u2193)", () => moveTo(id, state.order.indexOf(id) + 1)));
    head.appendChild(tools);
    card.appendChild(head);
    card.appendChild(el("div", "rrm-text", texts.get(id)));
    card.addEventListener("pointerdown", (e) => {
      // A mouse drags from anywhere on the card; a finger or pen from the handle (elsewhere it scrolls).
      const fromHandle = e.pointerType === "mouse" || e.target.closest(".rrm-handle");
      if (e.button === 0 && fromHandle && !e.target.closest("button") && !state.sent) startDrag(id, e);
    });
    card.addEventListener("focus", () => {
      state.focus = state.order.indexOf(id);
      layout();
    });
    cards.set(id, card);
  }

  const bar = el("div", "rrm-actions");
  const flagLabel = el("label", "rrm-flag");
  const flag = el("input");
  flag.type = "checkbox";
  flag.checked = state.flagged;
  flag.addEventListener("change", () => (state.flagged = flag.checked));
  flagLabel.appendChild(flag);
  flagLabel.appendChild(document.createTextNode(" flag this list"));
  const note = el("input", "rrm-note");
  note.placeholder = "why (optional)";
  note.maxLength = 500;
  note.value = state.note;
  note.addEventListener("input", () => (state.note = note.value));
  bar.appendChild(flagLabel);
  bar.appendChild(note);
  bar.appendChild(button("rrm-skip", "Skip (s)", "skip this list for now", () => send("skip")));
  bar.appendChild(button("rrm-save", "Save ranking (Enter)", "append this ranking to the output file", () => send("save")));
  root.appendChild(bar);
  root.appendChild(el("div", "rrm-help", HELP));

  const onKey = (e) => {
    const t = e.target;
    if (state.sent || e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
    const k = e.key;
    const id = state.order[state.focus];
    const shift = e.shiftKey;
    if ((k === "ArrowDown" && !shift) || k === "j") focusAt(state.focus + 1);
    else if ((k === "ArrowUp" && !shift) || k === "k") focusAt(state.focus - 1);
    else if ((k === "ArrowDown" && shift) || k === "J") { moveTo(id, state.focus + 1); focusAt(state.order.indexOf(id)); }
    else if ((k === "ArrowUp" && shift) || k === "K") { moveTo(id, state.focus - 1); focusAt(state.order.indexOf(id)); }
    else if (/^[1-9]$/.test(k)) { moveTo(id, Number(k) - 1); focusAt(state.order.indexOf(id)); }
    else if (k === "=" || k === "t") toggleTie(id);
    else if (k === "f") { flag.checked = state.flagged = !state.flagged; }
    else if (k === "s") send("skip");
    else if (k === "Enter") send("save");
    else return;
    e.preventDefault();
  };
  // One listener per page: a remount replaces the previous one even if its cleanup never ran.
  if (window.__rrmKeys) document.removeEventListener("keydown", window.__rrmKeys);
  window.__rrmKeys = onKey;
  document.addEventListener("keydown", onKey);
  layout();
  return () => {
    document.removeEventListener("keydown", onKey);
    if (window.__rrmKeys === onKey) window.__rrmKeys = null;
  };
}
