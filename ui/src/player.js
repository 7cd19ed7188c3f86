// The wan-mcp player: a task's live state while it runs, then the video, inline in the host.
//
// The host hands us the tool's input and result (ui/notifications/tool-input and tool-result). While
// the job runs we ask get_task_status with a short wait (each answer is the server's latest news);
// once it is done we play the gateway's URL while it is valid, else the saved file read through
// resources/read (video://<task id>, a base64 blob: works on stdio, needs no CSP entry). "New take"
// sends the same request with a new seed through the host's normal tool call (its approval and our
// spending rules apply). Everything shown is also in the tool's text result for hosts without Apps.
import { App } from "@modelcontextprotocol/ext-apps";

const TERMINAL = new Set(["completed", "failed", "rejected"]);
const TOOL_ONLY = new Set(["wait_seconds", "dry_run", "confirm_token"]);
const $ = (id) => document.getElementById(id);

const app = new App({ name: "wan-mcp player", version: "1.0.0" }, {}, { autoResize: true });
let request = null; // the generate_video arguments, when we saw them
let current = null; // the task id being shown
let generation = 0; // bumps when a new task replaces the shown one (stale refreshes stop)

function structured(result) {
  return (result && (result.structuredContent || result.structured_content)) || null;
}

function poster(result) {
  const image = (result && result.content ? result.content : []).find((c) => c.type === "image");
  return image ? `data:${image.mimeType || "image/jpeg"};base64,${image.data}` : null;
}

function render(data, result) {
  if (!data) return;
  if (data.error && !data.task_id) {
    $("status").textContent = data.error.message || "error";
    $("next").textContent = data.next || "";
    return;
  }
  current = data.task_id;
  const pct = data.status === "completed" ? 100 : data.progress || 0;
  $("title").textContent = `Task ${data.task_id}`;
  $("status").textContent = `${data.status.replace("_", " ")}${TERMINAL.has(data.status) ? "" : ` · ${pct}%`}`;
  $("bar").style.width = `${pct}%`;
  $("next").textContent = data.error ? `${data.error.code}: ${data.error.message}` : data.next || "";
  const still = poster(result);
  if (still && $("video").hidden) {
    $("poster").src = still;
    $("poster").hidden = false;
  }
  $("take").disabled = !request;
  $("open").disabled = !(data.download_url || data.video_url);
  $("open").dataset.url = data.download_url || data.video_url || "";
  if (data.status === "completed") play(data);
}

async function play(data) {
  const video = $("video");
  if (video.dataset.task === data.task_id) return;
  video.dataset.task = data.task_id;
  const expires = data.url_expires_at ? Date.parse(data.url_expires_at) : 0;
  const fresh = data.video_url && (!expires || expires - Date.now() > 60_000);
  video.onerror = () => fromFile(data.task_id); // an expired or unreachable URL: the saved file instead
  if (fresh) video.src = data.video_url;
  else await fromFile(data.task_id);
  video.hidden = false;
  $("poster").hidden = true;
  video.play().catch(() => {}); // autoplay may be refused; the controls still work
}

async function fromFile(taskId) {
  const video = $("video");
  if (video.dataset.blob === taskId) return;
  video.dataset.blob = taskId;
  try {
    const read = await app.readServerResource({ uri: `video://${taskId}` });
    const blob = read.contents && read.contents[0] && read.contents[0].blob;
    if (!blob) throw new Error("no video in the answer");
    const bytes = Uint8Array.from(atob(blob), (c) => c.charCodeAt(0));
    video.src = URL.createObjectURL(new Blob([bytes], { type: "video/mp4" }));
    video.play().catch(() => {});
  } catch (err) {
    $("next").textContent = `The video cannot be shown here (${err.message}); the file is in the result above.`;
  }
}

async function follow(taskId, mine) {
  while (mine === generation) {
    let result;
    try {
      result = await app.callServerTool({ name: "get_task_status", arguments: { task_id: taskId, wait_seconds: 20 } });
    } catch (err) {
      $("next").textContent = `Could not refresh (${err.message}); retrying.`;
      await new Promise((r) => setTimeout(r, 3000));
      continue;
    }
    if (mine !== generation) return;
    const data = structured(result);
    render(data, result);
    if (!data || !data.status || TERMINAL.has(data.status) || result.isError) return;
  }
}

function show(result) {
  const data = structured(result);
  generation += 1;
  render(data, result);
  if (data && data.task_id && data.status && !TERMINAL.has(data.status) && !data.dry_run) follow(data.task_id, generation);
}

app.ontoolinput = (params) => {
  const args = (params && params.arguments) || {};
  if (typeof args.prompt === "string" || args.image || args.reference_videos) {
    request = Object.fromEntries(Object.entries(args).filter(([k]) => !TOOL_ONLY.has(k)));
  }
};
app.ontoolresult = (result) => show(result);

$("take").onclick = async () => {
  if (!request) return;
  $("take").disabled = true;
  $("video").hidden = true;
  $("video").removeAttribute("src");
  $("video").dataset.task = "";
  const seed = Math.floor(Math.random() * 2 ** 31);
  try {
    show(await app.callServerTool({ name: "generate_video", arguments: { ...request, seed } }));
  } catch (err) {
    $("next").textContent = `New take not started (${err.message}).`;
    $("take").disabled = false;
  }
};
$("open").onclick = () => {
  const url = $("open").dataset.url;
  if (url) app.openLink({ url }).catch(() => {});
};

await app.connect();
