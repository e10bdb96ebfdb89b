// The console's progressive enhancement: confirmations, copying pull commands, and a build's live log and
// progress. Every page works without it; text from the server is only ever set as textContent.
"use strict";

const ANSI = /\x1b\[[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;
const PROGRESS_EVERY_MS = 2000;
const FOLLOW_AGAIN_MS = 3000;
const FOLLOW_ATTEMPTS = 10;  // half a minute of a live log that cannot be followed, then it says so

function confirmBeforeSubmit() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
}

function copyButtons() {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(button.dataset.copy);
        button.textContent = "Copied";
      } catch {
        window.prompt("Copy the pull command:", button.dataset.copy);
      }
    });
  }
}

function atBottom(element) {
  return element.scrollHeight - element.scrollTop - element.clientHeight < 4;
}

function appendLine(log, text) {
  const stick = atBottom(log);
  const line = document.createElement("span");
  line.textContent = text.replace(ANSI, "");
  log.append(line, "\n");
  if (stick) log.scrollTop = log.scrollHeight;
}

function followLog() {
  const log = document.getElementById("log");
  if (!log || !log.dataset.follow) return;
  const state = document.getElementById("log-state");
  log.textContent = "";  // the stream replays the log from its first line
  const source = new EventSource(log.dataset.follow);
  source.onmessage = (event) => appendLine(log, event.data);
  source.addEventListener("end", (event) => {
    source.close();
    state.textContent = `The build ended ${event.data}.`;
    window.setTimeout(() => window.location.reload(), 800);
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) followAgain(state);
  };
}

let followAttempts = 0;

function followAgain(state) {
  // The API answered an error (Redis away, say: a failover takes seconds): follow again from the first line.
  if (++followAttempts > FOLLOW_ATTEMPTS) {
    state.textContent = "The live log stopped; reload to see more.";
    return;
  }
  state.textContent = "The live log was interrupted; following it again…";
  window.setTimeout(followLog, FOLLOW_AGAIN_MS);
}

function refreshProgress() {
  const holder = document.getElementById("progress");
  if (!holder) return;
  const timer = window.setInterval(async () => {
    const answer = await fetch(holder.dataset.src, {credentials: "same-origin"}).catch(() => null);
    if (!answer || !answer.ok) return;
    const page = new DOMParser().parseFromString(await answer.text(), "text/html");
    const fresh = page.querySelector(".progress");
    if (fresh) holder.replaceChildren(document.importNode(fresh, true));
    if (page.querySelector(".stage.final:not(.todo)")) window.clearInterval(timer);
  }, PROGRESS_EVERY_MS);
}

function showLogEnd() {
  const log = document.getElementById("log");
  if (log) log.scrollTop = log.scrollHeight;  // where a build's outcome is, and where a live log grows
}

document.addEventListener("DOMContentLoaded", () => {
  showLogEnd();
  confirmBeforeSubmit();
  copyButtons();
  followLog();
  refreshProgress();
});
