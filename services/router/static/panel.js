// Beside the task: the project's guideline (text and version) and the labeler's progress.
//
// Read from GET /v1/projects/{p}/review, which carries no model output, so it is safe to
// show before the labeler answers. "Today" is the labeler's own day: the page sends its
// local midnight.

const $ = (id) => document.getElementById(id);

export function localMidnight(now = new Date()) {
  const start = new Date(now);
  start.setHours(0, 0, 0, 0);
  return start.toISOString();
}

function waitingText(waiting) {
  if (waiting.fewer_than) return `fewer than ${waiting.fewer_than} waiting`;
  if (waiting.count === 0) return "none waiting";
  const n = waiting.count.toLocaleString("en");
  return waiting.exact ? `${n} waiting` : `about ${n} waiting`;
}

export function progressText(context) {
  const done = context.progress.labeled_today;
  return `${done.toLocaleString("en")} labeled today · ${waitingText(context.waiting)}`;
}

// Fetch the context; null (and the panel left as it was) when it cannot be read, since
// the task itself is what matters and its own request reports the failure.
export async function loadContext(call, project) {
  const path = `/v1/projects/${encodeURIComponent(project)}/review?since=${encodeURIComponent(localMidnight())}`;
  try {
    const { data } = await call("GET", path);
    return data;
  } catch (err) {
    return null;
  }
}

export function renderPanel(context) {
  if (!context) return;
  $("panel").hidden = false;
  $("progress").textContent = progressText(context);
  const box = $("guideline");
  const text = $("guideline-text");
  text.replaceChildren();
  if (context.guideline) {
    for (const part of context.guideline.split(/\n{2,}/)) {
      const p = document.createElement("p");
      p.textContent = part; // plain text: never HTML
      text.append(p);
    }
  } else {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "This project has no written guideline yet.";
    text.append(p);
  }
  $("guideline-version").textContent = context.guideline_version
    ? `version ${context.guideline_version}` : "(no version)";
  box.hidden = false;
}

export function hidePanel() {
  $("panel").hidden = true;
}

export function toggleGuideline() {
  const box = $("guideline");
  box.open = !box.open;
}
