// Companion NPC client for Unity (protocol v1, see server/PROTOCOL.md).
// Add to a GameObject, fill in the fields, subscribe to the events, call Say("...").
// Uses .NET's ClientWebSocket; events are raised on Unity's main thread.
using System;
using System.Collections.Concurrent;
using System.Net.WebSockets;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using UnityEngine;

public class CompanionNpcClient : MonoBehaviour
{
    public string serverUrl = "ws://127.0.0.1:8000/v1/ws";
    public string apiKey = "";
    public string playerId = "player-1";
    public string npcId = "mira";
    [Tooltip("Kept from 'ready'; persist it to resume the conversation later.")]
    public string sessionId = "";

    public event Action<string, int> OnToken;          // text delta, attempt (clear the bubble when it rises)
    public event Action<ReplyFrame> OnReply;            // final text + metadata (emotion, refused, ...)
    public event Action<string, string> OnError;        // code, message

    [Serializable] public class MemoryRef { public string id; public string type; public string content; }
    [Serializable] public class Metadata { public string strategy; public string emotion; public bool refused; public bool regenerated; public MemoryRef[] memories_used; }
    [Serializable] public class ReplyFrame { public string reply_to; public string text; public Metadata metadata; }
    [Serializable] class Frame { public string type; public string session_id; public string text; public int attempt; public string code; public string message; public string reply_to; }
    [Serializable] class Hello { public string type = "hello"; public string token; public string player_id; public string npc_id; public string session_id; }
    [Serializable] class Say { public string type = "say"; public string id; public string text; }

    readonly ConcurrentQueue<string> inbox = new ConcurrentQueue<string>();
    readonly CancellationTokenSource cts = new CancellationTokenSource();
    ClientWebSocket ws;
    int nextId;

    async void Start() { await Connect(); }

    async Task Connect()
    {
        ws = new ClientWebSocket();
        try { await ws.ConnectAsync(new Uri(serverUrl), cts.Token); }
        catch (Exception e) { OnError?.Invoke("connect_failed", e.Message); return; }
        var hello = new Hello { token = apiKey, player_id = playerId, npc_id = npcId, session_id = string.IsNullOrEmpty(sessionId) ? null : sessionId };
        // JsonUtility writes null strings as "", which the server rejects for session_id: drop it.
        await Send(JsonUtility.ToJson(hello).Replace(",\"session_id\":\"\"", ""));
        _ = Task.Run(Receive);
    }

    public async void Say(string text)
    {
        await Send(JsonUtility.ToJson(new Say { id = "u" + (++nextId), text = text }));
    }

    async Task Send(string json)
    {
        if (ws?.State != WebSocketState.Open) { OnError?.Invoke("not_connected", "The socket is not open."); return; }
        await ws.SendAsync(new ArraySegment<byte>(Encoding.UTF8.GetBytes(json)), WebSocketMessageType.Text, true, cts.Token);
    }

    async Task Receive()
    {
        var buffer = new byte[64 * 1024];
        var message = new StringBuilder();
        while (ws.State == WebSocketState.Open && !cts.IsCancellationRequested)
        {
            var result = await ws.ReceiveAsync(new ArraySegment<byte>(buffer), cts.Token);
            if (result.MessageType == WebSocketMessageType.Close) break;   // 4401 = bad API key
            message.Append(Encoding.UTF8.GetString(buffer, 0, result.Count));
            if (result.EndOfMessage) { inbox.Enqueue(message.ToString()); message.Clear(); }
        }
    }

    void Update()  // frames are handled on the main thread, so handlers may touch the scene
    {
        while (inbox.TryDequeue(out var json))
        {
            var frame = JsonUtility.FromJson<Frame>(json);
            switch (frame.type)
            {
                case "ready": sessionId = frame.session_id; break;
                case "token": OnToken?.Invoke(frame.text, frame.attempt); break;
                case "reply": OnReply?.Invoke(JsonUtility.FromJson<ReplyFrame>(json)); break;
                case "error": OnError?.Invoke(frame.code, frame.message); break;
            }
        }
    }

    void OnDestroy()
    {
        cts.Cancel();
        ws?.Dispose();
    }
}
