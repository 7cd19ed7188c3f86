// A minimal MCP Apps host for the browser test (tests/e2e/test_player_browser.py), built with the
// official host side (AppBridge): it renders the player in a sandboxed iframe and relays the view's
// tools/call and resources/read to window.hostCallTool / window.hostReadResource, which the test
// exposes from Python, where the official MCP client talks to the real wan-mcp server.
import { AppBridge, PostMessageTransport } from "@modelcontextprotocol/ext-apps/app-bridge";

window.calls = [];
window.startHost = async (html, toolArgs, toolResult) => {
  const iframe = document.createElement("iframe");
  iframe.id = "view";
  iframe.setAttribute("sandbox", "allow-scripts");
  iframe.style.cssText = "width: 640px; height: 560px; border: 1px solid #ccc";
  document.body.appendChild(iframe);
  const bridge = new AppBridge(
    null,
    { name: "wan-mcp test host", version: "1.0.0" },
    { serverTools: {}, serverResources: {}, openLinks: {} },
  );
  bridge.oncalltool = async (params) => {
    window.calls.push(params.name);
    return await window.hostCallTool(params.name, params.arguments || {});
  };
  bridge.onreadresource = async (params) => await window.hostReadResource(params.uri);
  bridge.onopenlink = async () => ({});
  const initialized = new Promise((resolve) => {
    bridge.oninitialized = resolve;
  });
  iframe.srcdoc = html;
  await new Promise((resolve) => {
    iframe.onload = resolve;
  });
  await bridge.connect(new PostMessageTransport(iframe.contentWindow, iframe.contentWindow));
  await initialized;
  await bridge.sendToolInput({ arguments: toolArgs });
  await bridge.sendToolResult(toolResult);
  return true;
};
