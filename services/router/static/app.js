// loopwise reviewer page: take a task, label it, see the model's answer only afterwards.
//
// Blind mode is the point: this page asks the API for nothing but the task itself (and
// the guideline and progress beside it, which hold no model output) before the labeler
// submits, and the API sends no model guess in blind mode.
//
// Modules: api.js (requests, error sentences), example.js (drawing the item), panel.js
// (guideline, progress); this one is the labeling flow and its keys. Another view (a
// comparison of two outputs, say) belongs in a module of its own, wired in here.

import { ApiError, client } from "./api.js";
import { renderExample } from "./example.js";
import { hidePanel, loadContext, renderPanel, toggleGuideline } from "./panel.js";


(() => {
  const NONE_OF_THESE = "__none_of_these__";
  const STORE = window.sessionStorage;
  const $ = (id) => document.getElementById(id);

  const state = {
    phase: "login", // login | idle | labeling | revealed | revising | busy
    token: STORE.getItem("loopwise.token") || "",
    project: STORE.getItem("loopwise.project") || "",
    task: null,
    picked: null,
    submitted: null,
    shownAt: 0,
    keyToOption: new Map(),
    context: null, // the project's guideline, display and the labeler's progress
  };

  const api = client(() => state.token);

  // --- status and errors -----------------------------------------------------------------
  function say(text) {
    $("status").textContent = text;
  }

  function showError(text) {
    const box = $("error");
    box.textContent = text;
    box.hidden = !text;
  }

  function fail(err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut(`Sign-in failed: ${err.message}`);
      return;
    }
    showError(err instanceof ApiError ? err.message : String(err));
  }

  async function refreshPanel() {
    const context = await loadContext(api, state.project);
    if (context) {
      state.context = context;
      renderPanel(context);
    }
  }

  // --- views -------------------------------------------------------------------------------
  function show(view) {
    for (const id of ["login", "idle", "task"]) $(id).hidden = id !== view;
    $("session").hidden = view === "login";
    $("session-project").textContent = state.project;
  }

  function label(option) {
    return option === NONE_OF_THESE ? "none of these" : option;
  }

  function signOut(error, note) {
    STORE.removeItem("loopwise.token");
    state.token = "";
    state.task = null;
    state.context = null;
    state.phase = "login";
    hidePanel();
    show("login");
    $("project").value = state.project;
    $("token").value = "";
    say(note || "");
    showError(error || "");
    $("token").focus();
  }

  function idle(title, text) {
    state.task = null;
    state.phase = "idle";
    clearReveal();
    show("idle");
    $("idle-title").textContent = title;
    $("idle-text").textContent = text;
    $("take").focus();
  }

  // --- options and keys ----------------------------------------------------------------------
  function assignKeys(options) {
    // A single-digit option is picked with its own digit; the others take the free keys 1..9, 0.
    const keys = new Map();
    const used = new Set(options.filter((o) => /^[0-9]$/.test(o)));
    const free = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"].filter((k) => !used.has(k));
    for (const option of options) {
      if (used.has(option)) keys.set(option, option);
      else if (free.length > 0) keys.set(free.shift(), option);
    }
    return keys;
  }

  function renderOptions(task) {
    const box = $("options");
    box.replaceChildren();
    state.keyToOption = assignKeys(task.options);
    const keyOf = new Map([...state.keyToOption].map(([k, o]) => [o, k]));
    for (const option of task.options) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "option";
      button.dataset.label = option;
      button.setAttribute("aria-pressed", "false");
      const key = keyOf.get(option);
      if (key !== undefined && key !== option) { // a digit label is its own key
        const kbd = document.createElement("kbd");
        kbd.textContent = key;
        button.append(kbd);
      }
      const text = document.createElement("span");
      text.textContent = label(option);
      button.append(text);
      if (label(option).length > 5) button.classList.add("wide");
      if (task.mode === "prelabel" && option === task.prelabel) {
        button.classList.add("suggested");
        const tag = document.createElement("small");
        tag.textContent = "suggested";
        button.append(tag);
      }
      button.addEventListener("click", () => pick(option));
      box.append(button);
    }
    if (task.options.length === 0) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "This task offers no options.";
      box.append(p);
    }
  }

  function pickHelp(options) {
    const digits = options.filter((o) => /^[0-9]$/.test(o)).length;
    if (digits === options.length) return "type the digit to pick it";
    if (digits > 0) return "type a digit label, or the key shown on an option";
    return "the key shown on an option picks it";
  }

  function pick(option) {
    if (state.phase !== "labeling" && state.phase !== "revising") return;
    state.picked = option;
    for (const button of $("options").querySelectorAll("button.option")) {
      button.setAttribute("aria-pressed", String(button.dataset.label === option));
    }
    $("submit").disabled = false;
    say(`Picked “${label(option)}”. Press Enter to ${state.phase === "revising" ? "save" : "submit"}.`);
  }

  function setOptionsEnabled(enabled) {
    $("options-box").disabled = !enabled;
  }

  // --- the task lifecycle --------------------------------------------------------------------
  function clearReveal() {
    // The reveal is built after the answer and removed before the next task, so the page
    // never holds model output while a new task is on screen.
    $("reveal").replaceChildren();
    $("reveal").hidden = true;
    $("after").hidden = true;
  }

  const MODES = {
    blind: "blind: label it yourself",
    prelabel: "with the model's suggestion",
    choice: "choose among the likely labels",
  };

  function renderTask(task) {
    state.task = task;
    state.picked = null;
    state.submitted = null;
    clearReveal();
    show("task");
    $("task").dataset.taskId = task.task_id;
    $("item-id").textContent = task.item_id;
    $("mode-name").textContent = MODES[task.mode] || task.mode;
    renderExample($("example"), task.payload, state.context && state.context.display);
    const hint = $("hint");
    hint.replaceChildren();
    if (task.mode === "prelabel" && task.prelabel) {
      hint.append("Model's suggestion: ");
      const strong = document.createElement("strong");
      strong.textContent = label(task.prelabel);
      hint.append(strong, ". Check it yourself: nothing is selected for you.");
      hint.hidden = false;
    } else {
      hint.hidden = true;
    }
    $("options-legend").textContent =
      task.mode === "choice" ? "Which one is it?" : "Your label";
    renderOptions(task);
    setOptionsEnabled(true);
    $("actions").hidden = false;
    $("submit").disabled = true;
    $("submit").firstChild.textContent = "Submit ";
    $("skip").hidden = false;
    $("keys-help").textContent =
      `Keys: ${pickHelp(task.options)} · Enter submits · S skips · G shows or hides the guideline`;
    state.phase = "labeling";
    state.shownAt = performance.now();
    say(`Task ready: ${task.options.length} options.`);
    $("task").focus(); // not an option: a focus ring there would look like a choice
  }

  async function takeNext() {
    if (state.phase === "busy") return;
    state.phase = "busy";
    showError("");
    clearReveal();
    say("Taking the next task…");
    const project = encodeURIComponent(state.project);
    try {
      const { status, data } = await api("GET", `/v1/projects/${project}/tasks/next`);
      // After the lease, so that "waiting" counts what is left once this task is taken;
      // before the task is drawn, which needs the project's display.
      const context = await loadContext(api, state.project);
      if (context) {
        state.context = context;
        renderPanel(context);
      }
      if (status === 204) {
        idle("Nothing to label", "No task is waiting for you right now. Try again in a moment.");
        say("Nothing is waiting.");
        return;
      }
      renderTask(data);
    } catch (err) {
      if (err instanceof ApiError && err.status === 423) {
        idle("Paused", err.message);
        say("You are paused.");
        showError(err.message);
        return;
      }
      if (err instanceof ApiError && err.status === 401) {
        fail(err);
        return;
      }
      if (err instanceof ApiError && err.unavailable) {
        idle("Service unavailable", "Nothing was lost. Press N (or the button) to try again.");
      } else {
        idle("Could not take a task", "See the message above, then try again.");
      }
      fail(err);
    }
  }

  async function submit() {
    if (state.phase === "revising") return saveChange();
    if (state.phase !== "labeling") return;
    if (state.picked === null) {
      say("Pick a label first (a number key or a click).");
      return;
    }
    const task = state.task;
    const chosen = state.picked;
    const duration = Math.max(0, Math.round(performance.now() - state.shownAt));
    state.phase = "busy";
    showError("");
    say("Submitting…");
    try {
      const { data } = await api("POST", `/v1/tasks/${encodeURIComponent(task.task_id)}/submit`,
        { label: chosen, duration_ms: duration });
      state.submitted = chosen;
      showReveal(chosen, data);
      refreshPanel();
    } catch (err) {
      state.phase = "labeling";
      fail(err);
      if (err instanceof ApiError && err.unavailable) {
        say("Not saved yet: your pick is kept. Press Enter to try again.");
      }
    }
  }

  function showReveal(chosen, result) {
    const reveal = result.reveal || {};
    const box = $("reveal");
    box.replaceChildren();
    const you = document.createElement("p");
    you.append("You said ");
    const yours = document.createElement("strong");
    yours.textContent = label(chosen);
    you.append(yours, result.late ? " (your lease had expired: recorded as late)." : ".");
    const model = document.createElement("p");
    if (reveal.model_label) {
      const agreed = reveal.model_label === chosen;
      box.classList.toggle("agree", agreed);
      box.classList.toggle("differ", !agreed);
      model.append("The model said ");
      const theirs = document.createElement("strong");
      theirs.className = "model-label";
      theirs.textContent = label(reveal.model_label);
      model.append(theirs);
      if (typeof reveal.confidence === "number") {
        model.append(` with ${(reveal.confidence * 100).toFixed(1)}% confidence`);
      }
      model.append(agreed ? " — you agree." : " — you differ.");
    } else {
      box.classList.remove("agree", "differ");
      model.append("The model had no label for this item.");
    }
    const version = document.createElement("p");
    version.className = "meta";
    version.textContent = `model version ${reveal.model_version || "none"}` +
      (result.status === "duplicate" ? " · already submitted earlier" : "");
    box.append(you, model, version);
    box.hidden = false;
    setOptionsEnabled(false);
    $("actions").hidden = true;
    $("after").hidden = false;
    $("keys-help").textContent =
      "Keys: N or Enter takes the next task · C changes your answer · G the guideline";
    state.phase = "revealed";
    say("Saved. The model's answer is shown.");
    $("next").focus();
  }

  function startChange() {
    if (state.phase !== "revealed") return;
    state.phase = "revising";
    state.picked = null;
    for (const button of $("options").querySelectorAll("button.option")) {
      button.setAttribute("aria-pressed", "false");
    }
    setOptionsEnabled(true);
    $("actions").hidden = false;
    $("skip").hidden = true;
    $("submit").disabled = true;
    $("submit").firstChild.textContent = "Save change ";
    $("after").hidden = true;
    $("keys-help").textContent = "Keys: pick the new label · Enter saves · Escape keeps your answer";
    say("Pick the label you want instead.");
    $("task").focus();
  }

  function cancelChange() {
    if (state.phase !== "revising") return;
    state.phase = "revealed";
    setOptionsEnabled(false);
    $("actions").hidden = true;
    $("after").hidden = false;
    $("keys-help").textContent = "Keys: N or Enter takes the next task · C changes your answer";
    say("Your answer stays as it was.");
    $("next").focus();
  }

  async function saveChange() {
    if (state.picked === null) {
      say("Pick a label first (a number key or a click).");
      return;
    }
    const chosen = state.picked;
    state.phase = "busy";
    showError("");
    try {
      await api("POST", `/v1/tasks/${encodeURIComponent(state.task.task_id)}/revise`,
        { label: chosen });
      const note = document.createElement("p");
      note.className = "changed";
      note.append("Changed your answer to ");
      const strong = document.createElement("strong");
      strong.textContent = label(chosen);
      note.append(strong, " (recorded as a revision after the reveal).");
      $("reveal").append(note);
      state.submitted = chosen;
      state.phase = "revising";
      cancelChange();
      say(`Changed to “${label(chosen)}”.`);
    } catch (err) {
      state.phase = "revising";
      fail(err);
    }
  }

  async function skip() {
    if (state.phase !== "labeling") return;
    state.phase = "busy";
    showError("");
    try {
      await api("POST", `/v1/tasks/${encodeURIComponent(state.task.task_id)}/skip`);
      say("Skipped.");
      state.phase = "idle";
      await takeNext();
    } catch (err) {
      state.phase = "labeling";
      fail(err);
    }
  }

  // --- keyboard ------------------------------------------------------------------------------
  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    let handled = true;
    if (key === "g" && state.phase !== "login" && !$("panel").hidden) {
      toggleGuideline();
    } else if (state.phase === "labeling" || state.phase === "revising") {
      if (state.keyToOption.has(key)) pick(state.keyToOption.get(key));
      else if (key === "Enter") submit();
      else if (key === "s" && state.phase === "labeling") skip();
      else if (key === "Escape" && state.phase === "revising") cancelChange();
      else handled = false;
    } else if (state.phase === "revealed") {
      if (key === "n" || key === "Enter") takeNext();
      else if (key === "c") startChange();
      else handled = false;
    } else if (state.phase === "idle") {
      if (key === "n" || key === "Enter") takeNext();
      else handled = false;
    } else {
      handled = false;
    }
    // Keep Enter and Space from also clicking whichever button has the focus.
    if (handled || (state.phase === "busy" && key === "Enter")) event.preventDefault();
  }

  // --- start ---------------------------------------------------------------------------------
  function start() {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      const project = $("project").value.trim();
      if (!token || !project) {
        showError("Both a token and a project are needed.");
        return;
      }
      state.token = token;
      state.project = project;
      STORE.setItem("loopwise.token", token);
      STORE.setItem("loopwise.project", project);
      state.phase = "idle";
      show("idle");
      takeNext();
    });
    $("logout").addEventListener("click", () => signOut("", "Signed out."));
    $("take").addEventListener("click", takeNext);
    $("submit").addEventListener("click", submit);
    $("skip").addEventListener("click", skip);
    $("next").addEventListener("click", takeNext);
    $("change").addEventListener("click", startChange);
    document.addEventListener("keydown", onKey);

    if (state.token && state.project) {
      // A reload: the router hands back the task this labeler holds (or leases the next).
      idle("Welcome back", `Signed in to ${state.project}.`);
      takeNext();
    } else {
      show("login");
      $("project").value = state.project;
      $("token").focus();
    }
  }

  start();
})();
