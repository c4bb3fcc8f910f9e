using System.Data.Common;

namespace OnnxTune.Hosting.Internal;

/// <summary>
/// Reads one feedback row in the column order every store selects (sequence, id, created_at ms, user_id, text,
/// tensors JSON, label_index, label_name, weight, metadata JSON, held_out, partition_key): one mapping for SQLite and PostgreSQL.
/// </summary>
internal static class FeedbackRows
{
    /// <summary>The record in the reader's current row; <paramref name="store"/> names the store in error messages.</summary>
    /// <exception cref="OnnxTuneException">A JSON column is damaged (the message names the record).</exception>
    public static FeedbackRecord Read(DbDataReader r, string store) => new()
    {
        Sequence = r.GetInt64(0),
        Id = r.GetString(1),
        CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(2)),
        UserId = r.IsDBNull(3) ? null : r.GetString(3),
        Text = r.IsDBNull(4) ? null : r.GetString(4),
        Tensors = r.IsDBNull(5) ? null : FeedbackJson.ReadTensors(r.GetString(5), $"{store} record {r.GetString(1)}"),
        LabelIndex = r.GetInt64(6),
        LabelName = r.IsDBNull(7) ? null : r.GetString(7),
        Weight = (float)r.GetDouble(8),
        Metadata = r.IsDBNull(9) ? null : FeedbackJson.ReadMetadata(r.GetString(9)),
        // SQLite stores the flag as an integer, PostgreSQL as a boolean.
        HeldOut = Convert.ToBoolean(r.GetValue(10), System.Globalization.CultureInfo.InvariantCulture),
        PartitionKey = r.IsDBNull(11) ? null : r.GetString(11),
    };
}
