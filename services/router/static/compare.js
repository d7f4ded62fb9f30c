// loopwise reviewer page, comparisons: which of two (or more) candidate outputs is better.
//
// Kept in its own file (the labeling page is app.js): it shares the page's sign-in, read
// from sessionStorage, the #idle view it is started from, and api.js (an ES module).
// The candidates come by position, in the order the router drew and recorded for this
// reviewer; the page never receives a candidate id or a model name before the submit
// (the API sends none), and builds the reveal only after it.
//
// Keys: 1/2 (or 1..k) or the arrows pick, T tie, B both bad, R writes a reason,
// Enter submits, N takes the next comparison, Escape goes back to labeling.
import { client } from "./api.js";

(() => {
  const STORE = window.sessionStorage;
  const $ = (id) => document.getElementById(id);

  const state = {
    phase: "off", // off | busy | judging | revealed | none
    task: null,
    verdict: null, // better | ranked | tie | both_bad
    ranking: [], // positions picked, best first
    shownAt: 0,
  };

  // --- the API (the same bearer token the labeling page signed in with) -------------------
  // api.js's client: the same sentences a person can act on as the labeling page (a 503
  // names the store that is down; never a bare "the server answered 500").
  const api = client(() => STORE.getItem("loopwise.token") || "");

  function say(text) {
    $("status").textContent = text;
  }

  function showError(text) {
    $("error").textContent = text;
    $("error").hidden = !text;
  }

  // --- views -----------------------------------------------------------------------------
  function enter() {
    for (const id of ["login", "idle", "task"]) $(id).hidden = true;
    $("compare").hidden = false;
  }

  function leave() {
    // Back to the labeling page's idle view (the only view comparisons start from).
    state.phase = "off";
    state.task = null;
    clearReveal();
    $("compare").hidden = true;
    $("idle").hidden = false;
    $("take").focus();
    say("Back to labeling.");
  }

  function clearReveal() {
    $("compare-reveal").replaceChildren();
    $("compare-reveal").hidden = true;
    $("compare-after").hidden = true;
  }

  function none(text) {
    state.phase = "none";
    state.task = null;
    clearReveal();
    $("compare-task").hidden = true;
    $("compare-none").hidden = false;
    $("compare-none-text").textContent = text;
    $("compare-next-none").focus();
  }

  // --- a comparison on screen --------------------------------------------------------------
  function render(task) {
    state.task = task;
    state.verdict = null;
    state.ranking = [];
    clearReveal();
    $("compare-none").hidden = true;
    $("compare-task").hidden = false;
    $("compare-task").dataset.taskId = task.task_id;
    $("compare-id").textContent = task.comparison_id;
    $("compare-prompt").textContent = task.prompt;
    const box = $("candidates");
    box.replaceChildren();
    for (const candidate of task.candidates) {
      const card = document.createElement("button");
      card.type = "button";
      card.className = "candidate";
      card.dataset.position = String(candidate.position);
      card.setAttribute("aria-pressed", "false");
      const head = document.createElement("span");
      head.className = "candidate-head";
      const kbd = document.createElement("kbd");
      kbd.textContent = String(candidate.position);
      const rank = document.createElement("span");
      rank.className = "rank";
      head.append(kbd, ` Answer ${candidate.position}`, rank);
      const text = document.createElement("span");
      text.className = "candidate-text";
      text.textContent = candidate.text;
      card.append(head, text);
      card.addEventListener("click", () => pick(candidate.position));
      box.append(card);
    }
    box.style.setProperty("--columns", String(Math.min(task.candidates.length, 3)));
    $("reason").value = "";
    $("compare-verdicts").disabled = false;
    $("reason").disabled = false;
    $("compare-actions").hidden = false;
    $("compare-submit").disabled = true;
    const k = task.candidates.length;
    $("compare-keys").textContent = k === 2
      ? "Keys: 1/2 or ←/→ pick the better · T tie · B both bad · R reason · Enter submits"
      : `Keys: 1..${k} pick the best (press more to rank them) · Backspace undoes · ` +
        "T tie · B both bad · R reason · Enter submits";
    state.phase = "judging";
    state.shownAt = performance.now();
    markVerdict();
    say(`Comparison ready: ${k} answers.`);
    $("compare-task").focus();
  }

  function markVerdict() {
    const k = state.task ? state.task.candidates.length : 0;
    for (const card of $("candidates").querySelectorAll("button.candidate")) {
      const at = state.ranking.indexOf(Number(card.dataset.position));
      card.setAttribute("aria-pressed", String(at === 0));
      card.classList.toggle("ranked", at > 0);
      card.querySelector(".rank").textContent =
        at < 0 ? "" : k > 2 && state.ranking.length > 1 ? ` · #${at + 1}` : " · better";
    }
    for (const button of $("compare-verdicts").querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.verdict === state.verdict));
    }
    $("compare-submit").disabled = state.verdict === null;
  }

  function pick(position) {
    if (state.phase !== "judging") return;
    const k = state.task.candidates.length;
    if (position < 1 || position > k) return;
    if (k === 2 || state.verdict !== "better" && state.verdict !== "ranked") {
      state.ranking = [position];
    } else if (!state.ranking.includes(position)) {
      state.ranking.push(position);
      if (state.ranking.length === k - 1) { // the last one is ranked by elimination
        for (let p = 1; p <= k; p += 1) if (!state.ranking.includes(p)) state.ranking.push(p);
      }
    }
    state.verdict = state.ranking.length === 1 ? "better" : "ranked";
    markVerdict();
    say(state.verdict === "better"
      ? `Answer ${state.ranking[0]} is better. Press Enter to submit.`
      : `Ranked ${state.ranking.join(" > ")}. Press Enter to submit.`);
  }

  function unpick() {
    if (state.phase !== "judging" || state.ranking.length === 0) return;
    state.ranking.pop();
    state.verdict = state.ranking.length === 0 ? null
      : state.ranking.length === 1 ? "better" : "ranked";
    markVerdict();
  }

  function arrow(step) {
    // ← and → move the pick (with two answers: ← picks 1, → picks 2).
    if (state.phase !== "judging") return;
    const k = state.task.candidates.length;
    const now = state.verdict === "better" ? state.ranking[0] : (step > 0 ? 0 : k + 1);
    state.ranking = [];
    state.verdict = null;
    pick(Math.min(k, Math.max(1, now + step)));
  }

  function setVerdict(verdict) {
    if (state.phase !== "judging") return;
    state.verdict = verdict;
    state.ranking = [];
    markVerdict();
    say(verdict === "tie" ? "A tie: as good as each other. Press Enter to submit."
      : "Both bad: none is acceptable. Press Enter to submit.");
  }

  // --- the lifecycle -----------------------------------------------------------------------
  async function takeNext() {
    if (state.phase === "busy") return;
    state.phase = "busy";
    showError("");
    clearReveal();
    enter();
    say("Taking the next comparison…");
    const project = encodeURIComponent(STORE.getItem("loopwise.project") || "");
    try {
      const { status, data } = await api("GET", `/v1/projects/${project}/comparisons/next`);
      if (status === 204) {
        none("No comparison is waiting for you right now. Try again in a moment.");
        say("Nothing is waiting.");
        return;
      }
      render(data);
    } catch (err) {
      none(err.status === 423 ? err.message : "See the message above, then try again.");
      showError(err.message);
    }
  }

  async function submit() {
    if (state.phase !== "judging") return;
    if (state.verdict === null) {
      say("Pick the better answer, or T for a tie, B if both are bad.");
      return;
    }
    const task = state.task;
    const body = { verdict: state.verdict,
                   duration_ms: Math.max(0, Math.round(performance.now() - state.shownAt)) };
    if (state.verdict === "better") body.chosen = state.ranking[0];
    if (state.verdict === "ranked") body.ranking = [...state.ranking];
    const reason = $("reason").value.trim();
    if (reason) body.reason = reason;
    state.phase = "busy";
    showError("");
    say("Submitting…");
    try {
      const { data } = await api(
        "POST", `/v1/comparisons/${encodeURIComponent(task.task_id)}/submit`, body);
      reveal(body, data);
    } catch (err) {
      state.phase = "judging";
      showError(err.message);
    }
  }

  function reveal(answer, result) {
    // Only now the page learns (and shows) which model wrote each answer.
    const box = $("compare-reveal");
    box.replaceChildren();
    const you = document.createElement("p");
    const said = {
      better: `You preferred answer ${answer.chosen}`,
      ranked: `You ranked ${(answer.ranking || []).join(" > ")}`,
      tie: "You called it a tie",
      both_bad: "You found both bad",
    }[answer.verdict];
    you.textContent = said + (result.late ? " (your lease had expired: recorded as late)."
      : result.status === "duplicate" ? " (already submitted earlier)." : ".");
    const list = document.createElement("ul");
    list.className = "models";
    for (const c of (result.reveal && result.reveal.candidates) || []) {
      const item = document.createElement("li");
      item.append(`Answer ${c.position}: `);
      const model = document.createElement("strong");
      model.className = "model-name";
      model.textContent = c.model || "an unnamed model";
      item.append(model);
      list.append(item);
    }
    box.append(you, list);
    box.hidden = false;
    $("compare-verdicts").disabled = true;
    $("reason").disabled = true;
    $("compare-actions").hidden = true;
    $("compare-after").hidden = false;
    $("compare-keys").textContent = "Keys: N or Enter takes the next comparison · " +
      "Escape goes back to labeling";
    state.phase = "revealed";
    say("Saved. The models are shown.");
    $("compare-next").focus();
  }

  // --- keyboard (before the labeling page's handler, which must not see these keys) ---------
  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const idleShown = !$("idle").hidden && state.phase === "off";
    if (state.phase === "off" && !idleShown) return;
    const target = event.target;
    const typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA");
    if (typing) {
      if (target.id === "reason" && event.key === "Escape") $("compare-task").focus();
      if (target.id === "reason" && event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        submit();
      }
      return;
    }
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    let handled = true;
    if (idleShown) {
      if (key === "p") takeNext();
      else return; // the labeling page's keys
    } else if (state.phase === "judging") {
      if (/^[1-9]$/.test(key)) pick(Number(key));
      else if (key === "ArrowLeft") arrow(-1);
      else if (key === "ArrowRight") arrow(1);
      else if (key === "t") setVerdict("tie");
      else if (key === "b") setVerdict("both_bad");
      else if (key === "Backspace") unpick();
      else if (key === "r") $("reason").focus();
      else if (key === "Enter") submit();
      else if (key === "Escape") leave();
      else handled = false;
    } else if (state.phase === "revealed" || state.phase === "none") {
      if (key === "n" || key === "Enter") takeNext();
      else if (key === "Escape") leave();
      else handled = false;
    } else if (state.phase === "busy") {
      handled = key === "Enter";
    } else {
      handled = false;
    }
    event.stopImmediatePropagation(); // comparisons on screen: the keys are ours
    if (handled) event.preventDefault();
  }

  function start() {
    $("compare-start").addEventListener("click", takeNext);
    $("compare-submit").addEventListener("click", submit);
    $("compare-next").addEventListener("click", takeNext);
    $("compare-next-none").addEventListener("click", takeNext);
    for (const id of ["compare-back", "compare-back-none", "compare-back-after"]) {
      $(id).addEventListener("click", leave);
    }
    for (const button of $("compare-verdicts").querySelectorAll("button")) {
      button.addEventListener("click", () => setVerdict(button.dataset.verdict));
    }
    $("logout").addEventListener("click", () => { // app.js shows the sign-in form
      state.phase = "off";
      state.task = null;
      $("compare").hidden = true;
    });
    window.addEventListener("keydown", onKey, true); // capture: runs before app.js's
  }

  start();
})();
